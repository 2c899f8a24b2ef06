//! The properties of what the dlq tools publish: the copy of a dead letter put back into the
//! dead-letter queue, and a replayed message. Pure, so that each rule is tested on its own.
//!
//! Neither ever carries a `user_id`: RabbitMQ refuses (406, and closes the channel) a `user_id`
//! that is not the publishing connection's own user, and an uploader's is on every message it
//! published with one. A copy put back otherwise keeps the dead letter's properties, so that it
//! stays the same dead letter to the next look; its expiry is the one the evidence gives
//! ([`expiry`]), never one read from a header. A replayed message is the uploader's message again:
//! no `expiration` (an uploader's would make it vanish), no `x-edc-*` header (the daemon trusts none
//! from outside anyway), no trace of its deaths or deliveries.
//!
//! (The daemon's own copies, in `broker::publish`, follow the same rules; the two could share the
//! property rebuilding once both are in.)

use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::H_QUEUE;
use super::origin::{Origin, header};
use crate::broker::publish::{H_EXPIRES_AT, OUR_PREFIX};

/// When a copy put back expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    /// At this time (at once if it has passed: the dead letter has outlived its TTL).
    At(DateTime<Utc>),
    /// Never: kept until replayed or purged.
    Never,
    /// As the letter was taken (its own `expiration`, if any): for a letter whose origin is not
    /// known, so that a failed look-up changes nothing.
    AsTaken,
}

/// The expiry of a dead letter: for edc-ingest's own, `amqp.dead_letter_ttl` from its rejection,
/// if it was made with one (it carries an expiry: a TTL set later does not make the dead letters
/// made before it expire, as the broker would not either); for any other, none: a dead letter the
/// broker made carries none (it removes the `expiration` when it dead-letters), and an `x-edc-*`
/// header on it is its uploader's.
pub(super) fn expiry(origin: &Origin, props: &BasicProperties, ttl: Option<Duration>) -> Expiry {
    match origin {
        Origin::Ours(row) => {
            let made_with_one =
                props.expiration().is_some() || header(props, H_EXPIRES_AT).is_some();
            match ttl {
                Some(ttl) if made_with_one => Expiry::At(
                    row.rejected_at
                        + chrono::Duration::from_std(ttl).unwrap_or(chrono::TimeDelta::MAX),
                ),
                _ => Expiry::Never,
            }
        }
        Origin::Broker(_) | Origin::Unknown => Expiry::Never,
        Origin::Unverified => Expiry::AsTaken,
    }
}

/// The work queue a dead letter came from: its routing key, unless it is a copy put back (published
/// to the dead-letter queue by name), which keeps the routing key it was first taken with in
/// [`H_QUEUE`]. Any name at all, for `replay` to check against the work queues.
pub(super) fn came_from(
    props: &BasicProperties,
    routing_key: &str,
    dead_letter_queue: &str,
) -> String {
    if routing_key != dead_letter_queue {
        return routing_key.to_string();
    }
    header(props, H_QUEUE).unwrap_or_else(|| routing_key.to_string())
}

/// The properties of a copy put back: those of the dead letter as taken, less its `user_id` and
/// `x-delivery-count` (which the broker adds on a redelivery), with the work queue it came from in
/// [`H_QUEUE`] (its routing key, which the copy loses, replaces whatever the header said) and the
/// expiration `expiry` gives at `now`.
pub(super) fn put_back(
    props: &BasicProperties,
    routing_key: &str,
    dead_letter_queue: &str,
    expiry: Expiry,
    now: DateTime<Utc>,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (k, v) in props
        .headers()
        .as_ref()
        .map(|h| h.inner().iter())
        .into_iter()
        .flatten()
    {
        if k.as_str() != "x-delivery-count" && k.as_str() != H_QUEUE {
            headers.insert(k.clone(), v.clone());
        }
    }
    let from = came_from(props, routing_key, dead_letter_queue);
    if from != dead_letter_queue {
        headers.insert(H_QUEUE.into(), AMQPValue::LongString(from.into()));
    }
    let copy = without_user_id_and_expiration(props).with_headers(headers);
    match expiry {
        Expiry::At(ends) => {
            let left = (ends - now).num_milliseconds().max(1);
            copy.with_expiration(ShortString::from(left.to_string()))
        }
        Expiry::Never => copy,
        Expiry::AsTaken => match props.expiration() {
            Some(e) => copy.with_expiration(e.clone()),
            None => copy,
        },
    }
}

/// The properties of a replayed message: the dead letter's, less `user_id` and `expiration`, and
/// less every header edc-ingest or the broker wrote on it (`x-edc-*`, `x-death`, `x-first-death-*`,
/// `x-last-death-*`, `x-delivery-count`); with `x-edc-replayed-by`.
pub(super) fn replayed(props: &BasicProperties, actor: &str) -> BasicProperties {
    let theirs = |k: &str| {
        !(k.starts_with(OUR_PREFIX)
            || k == "x-death"
            || k.starts_with("x-first-death-")
            || k.starts_with("x-last-death-")
            || k == "x-delivery-count")
    };
    let mut headers = FieldTable::default();
    for (k, v) in props
        .headers()
        .as_ref()
        .map(|h| h.inner().iter())
        .into_iter()
        .flatten()
    {
        if theirs(k.as_str()) {
            headers.insert(k.clone(), v.clone());
        }
    }
    headers.insert(
        "x-edc-replayed-by".into(),
        AMQPValue::LongString(actor.to_string().into()),
    );
    without_user_id_and_expiration(props).with_headers(headers)
}

/// Every property but `user_id` and `expiration` (lapin has no way to unset one field).
fn without_user_id_and_expiration(p: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    macro_rules! keep {
        ($get:ident, $with:ident) => {
            if let Some(v) = p.$get() {
                out = out.$with(v.clone());
            }
        };
    }
    keep!(content_type, with_content_type);
    keep!(content_encoding, with_content_encoding);
    keep!(headers, with_headers);
    keep!(delivery_mode, with_delivery_mode);
    keep!(priority, with_priority);
    keep!(correlation_id, with_correlation_id);
    keep!(reply_to, with_reply_to);
    keep!(message_id, with_message_id);
    keep!(timestamp, with_timestamp);
    keep!(kind, with_type);
    keep!(app_id, with_app_id);
    keep!(cluster_id, with_cluster_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::dlq::origin::Rejection;

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    /// A dead letter as an uploader could have made it: every property set, a user_id, an
    /// expiration, forged and foreign headers.
    fn uploaders() -> BasicProperties {
        let mut h = FieldTable::default();
        for (k, v) in [
            ("x-edc-error-kind", "conflict"),
            ("x-edc-expires-at", "2001-01-01T00:00:00Z"),
            ("x-edc-queue", "somewhere.else"),
            ("x-first-death-reason", "delivery_limit"),
            ("x-last-death-queue", "edc.records"),
            ("traceparent", "00-abc"),
        ] {
            h.insert(k.into(), text(v));
        }
        h.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        h.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("identity".into())
            .with_headers(h)
            .with_delivery_mode(2)
            .with_priority(3)
            .with_correlation_id("c".into())
            .with_reply_to("r".into())
            .with_expiration("5".into())
            .with_message_id("m".into())
            .with_timestamp(7)
            .with_type("t".into())
            .with_user_id("uploader".into())
            .with_app_id("a".into())
            .with_cluster_id("k".into())
    }

    fn names(p: &BasicProperties) -> Vec<String> {
        let mut n: Vec<String> = p
            .headers()
            .as_ref()
            .map(|h| h.inner().keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        n.sort();
        n
    }

    fn ours(ttl_at_rejection: bool) -> (Origin, BasicProperties) {
        let row = Rejection {
            kind: "invalid".into(),
            reason: "r".into(),
            attempts: 1,
            consumer: None,
            rejected_at: DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .to_utc(),
        };
        let mut p = BasicProperties::default();
        if ttl_at_rejection {
            p = p.with_expiration("3600000".into());
        }
        (Origin::Ours(row), p)
    }

    #[test]
    fn only_our_own_dead_letter_has_an_expiry_and_it_comes_from_its_row() {
        let hour = Some(Duration::from_secs(3600));
        let (origin, props) = ours(true);
        let ends = DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(expiry(&origin, &props, hour), Expiry::At(ends));
        // Our header alone says it was made with a TTL too.
        let mut h = FieldTable::default();
        h.insert(H_EXPIRES_AT.into(), text("2099-01-01T00:00:00Z"));
        let with_header = BasicProperties::default().with_headers(h);
        assert_eq!(expiry(&origin, &with_header, hour), Expiry::At(ends));
        // Without a TTL now, or made without one: kept.
        assert_eq!(expiry(&origin, &props, None), Expiry::Never);
        let (origin, made_without) = ours(false);
        assert_eq!(expiry(&origin, &made_without, hour), Expiry::Never);
        // Anyone else's: kept, whatever its headers and properties say; unverified: as taken.
        for o in [Origin::Broker("delivery_limit".into()), Origin::Unknown] {
            assert_eq!(expiry(&o, &uploaders(), hour), Expiry::Never, "{o:?}");
        }
        assert_eq!(
            expiry(&Origin::Unverified, &uploaders(), hour),
            Expiry::AsTaken
        );
    }

    #[test]
    fn a_copy_put_back_keeps_the_dead_letter_but_never_a_user_id_or_a_stale_count() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:30:00Z")
            .unwrap()
            .to_utc();
        let p = uploaders();
        let ends = now + chrono::Duration::minutes(30);
        let copy = put_back(&p, "edc.records", "edc.records.dlq", Expiry::At(ends), now);
        assert_eq!(copy.user_id(), &None);
        assert_eq!(
            copy.expiration().as_ref().map(|e| e.as_str()),
            Some("1800000")
        );
        assert_eq!(
            names(&copy),
            [
                "traceparent",
                "x-death",
                "x-edc-error-kind",
                "x-edc-expires-at",
                "x-edc-queue",
                "x-first-death-reason",
                "x-last-death-queue"
            ]
        );
        // The routing key it was dead-lettered with replaces a forged x-edc-queue.
        assert_eq!(header(&copy, H_QUEUE).as_deref(), Some("edc.records"));
        // Everything else as taken.
        let restored = copy
            .clone()
            .with_user_id("uploader".into())
            .with_expiration("5".into())
            .with_headers(p.headers().clone().unwrap());
        assert_eq!(restored, p);
        // Past its end: gone at once. Never: no expiration at all. As taken: the letter's own.
        let past = put_back(&p, "edc.records", "edc.records.dlq", Expiry::At(now), now);
        assert_eq!(past.expiration().as_ref().map(|e| e.as_str()), Some("1"));
        let kept = put_back(&p, "edc.records", "edc.records.dlq", Expiry::Never, now);
        assert_eq!(kept.expiration(), &None);
        let as_taken = put_back(&p, "edc.records", "edc.records.dlq", Expiry::AsTaken, now);
        assert_eq!(
            as_taken.expiration().as_ref().map(|e| e.as_str()),
            Some("5")
        );
    }

    #[test]
    fn a_copy_of_a_copy_keeps_the_work_queue_it_was_first_taken_from() {
        let now = Utc::now();
        let first = put_back(
            &uploaders(),
            "edc.records.urgent",
            "dlq",
            Expiry::Never,
            now,
        );
        assert_eq!(came_from(&first, "dlq", "dlq"), "edc.records.urgent");
        let second = put_back(&first, "dlq", "dlq", Expiry::Never, now);
        assert_eq!(
            header(&second, H_QUEUE).as_deref(),
            Some("edc.records.urgent")
        );
        // Published to the dead-letter queue by name, with no header: no queue is made up.
        let bare = put_back(
            &BasicProperties::default(),
            "dlq",
            "dlq",
            Expiry::Never,
            now,
        );
        assert_eq!(header(&bare, H_QUEUE), None);
        assert_eq!(came_from(&bare, "dlq", "dlq"), "dlq");
    }

    #[test]
    fn a_replayed_message_carries_no_user_id_no_expiration_and_none_of_our_or_the_brokers_headers()
    {
        let p = uploaders();
        let r = replayed(&p, "dm-jane");
        assert_eq!(r.user_id(), &None);
        assert_eq!(r.expiration(), &None);
        assert_eq!(names(&r), ["traceparent", "x-edc-replayed-by"]);
        assert_eq!(header(&r, "x-edc-replayed-by").as_deref(), Some("dm-jane"));
        let restored = r
            .with_user_id("uploader".into())
            .with_expiration("5".into())
            .with_headers(p.headers().clone().unwrap());
        assert_eq!(restored, p, "every other property kept");
    }
}
