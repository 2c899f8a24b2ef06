//! Publishing with publisher confirms: dead letters, delayed retries, postponed messages. Only a
//! broker `ack` of the publish counts; the original delivery is acked only after it.
//!
//! Every copy of a delivery the daemon publishes is made by one function, [`copy_of`]: the
//! uploader's properties less what must never travel on a message of ours (`user_id`, which
//! RabbitMQ refuses from any connection but the uploader's own; `expiration`; the uploader's
//! `x-edc-*` headers; the broker's `x-delivery-count`). Then ours are added and sealed ([`seal`]):
//! only a sealed `x-edc-*` header is ever believed.

pub mod seal;

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};

use super::BrokerError;
use super::trace::TraceContext;
use crate::pipeline::Rejected;
pub use seal::{Bound, Seal, Sealed};

/// Header names we add to a dead letter. Their values are ours alone, never the payload's.
pub const H_KIND: &str = "x-edc-error-kind";
pub const H_ERROR: &str = "x-edc-error";
pub const H_ATTEMPTS: &str = "x-edc-attempts";
pub const H_FAILED_AT: &str = "x-edc-failed-at";
pub const H_CONSUMER: &str = "x-edc-consumer";
/// The work queue a dead letter came from (the dlq tools put a copy back with it, and `replay`
/// returns it there). Written by the daemon under the seal, so that a copy put back unchanged keeps
/// a seal that matches.
pub const H_QUEUE: &str = "x-edc-queue";
/// On a dead letter kept for `amqp.dead_letter_ttl`: when it expires (RFC 3339), so that a copy put
/// back by the dlq tools keeps the same end, not a fresh one.
pub const H_EXPIRES_AT: &str = "x-edc-expires-at";
/// On a message parked in a delay queue: how many attempts have failed so far.
pub const H_RETRIES: &str = "x-edc-retries";
pub const H_RETRY_REASON: &str = "x-edc-retry-reason";
/// On every copy of a message whose first delivery carried a `user_id`: that user, whom RabbitMQ
/// verified against the uploader's connection. Carried on, sealed, because the copy itself cannot
/// carry the `user_id` (see [`copy_of`]).
pub const H_UPLOADED_BY: &str = "x-edc-uploaded-by";
/// Seals every other `x-edc-*` header of a copy to its message (see [`seal`]).
pub const H_SEAL: &str = "x-edc-seal";
/// When a message was published, in milliseconds since the epoch: RabbitMQ's incoming-message
/// interceptor (`message_interceptors.incoming.set_header_timestamp`) adds it, and so does
/// `edc-ingest publish`. The daemon reads it for `edc_publish_to_commit_seconds`.
pub const H_TIMESTAMP_MS: &str = "timestamp_in_ms";
/// The prefix of every header edc-ingest writes. Headers with it that arrive from an uploader are
/// not ours: they are dropped from every copy we publish, so they can never pass for ours.
pub const OUR_PREFIX: &str = "x-edc-";
/// Set by a quorum queue on a message it delivers again; a copy is a new message, counted afresh.
pub const H_DELIVERY_COUNT: &str = "x-delivery-count";
/// Why a confirm carried the message back: no queue is bound for it (the topology is missing a
/// part; see [`confirmed`]).
pub const UNROUTABLE: &str = "unroutable: no queue is bound for it";

/// A channel in confirm mode, for publishing dead letters.
pub async fn confirm_channel(conn: &Connection) -> lapin::Result<Channel> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

/// The properties with the time of publication: the AMQP `timestamp` (whole seconds) and the
/// `timestamp_in_ms` header (milliseconds), from which the daemon measures publish-to-commit.
pub fn stamped(properties: BasicProperties) -> BasicProperties {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        H_TIMESTAMP_MS.into(),
        AMQPValue::LongLongInt(i64::try_from(now.as_millis()).unwrap_or(i64::MAX)),
    );
    properties
        .with_timestamp(now.as_secs())
        .with_headers(headers)
}

pub(crate) fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_string()))
}

/// The properties of a copy of a message: everything the uploader set, less `user_id` and
/// `expiration`, any header with our prefix, and `x-delivery-count`. The one place that decides
/// what of an uploader's message travels on a message of ours; the caller adds its own headers.
pub fn copy_of(original: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    macro_rules! keep {
        ($get:ident, $with:ident) => {
            if let Some(v) = original.$get() {
                out = out.$with(v.clone());
            }
        };
    }
    keep!(content_type, with_content_type);
    keep!(content_encoding, with_content_encoding);
    keep!(delivery_mode, with_delivery_mode);
    keep!(priority, with_priority);
    keep!(correlation_id, with_correlation_id);
    keep!(reply_to, with_reply_to);
    keep!(message_id, with_message_id);
    keep!(timestamp, with_timestamp);
    keep!(kind, with_type);
    keep!(app_id, with_app_id);
    keep!(cluster_id, with_cluster_id);
    if let Some(headers) = original.headers() {
        let kept: FieldTable = headers
            .inner()
            .iter()
            .filter(|(k, _)| !k.as_str().starts_with(OUR_PREFIX) && k.as_str() != H_DELIVERY_COUNT)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into();
        out = out.with_headers(kept);
    }
    out
}

/// The delivery a copy is made of, and what every copy of it carries.
pub struct Original<'a> {
    pub body: &'a [u8],
    pub properties: &'a BasicProperties,
    /// What the copy's seal is bound to.
    pub message: Bound<'a>,
    /// Who uploaded it (see [`H_UPLOADED_BY`]).
    pub uploaded_by: Option<&'a str>,
    /// The trace context the copy carries on.
    pub trace: TraceContext,
    pub seal: &'a Seal,
}

impl Original<'_> {
    /// A copy's properties: [`copy_of`] the original, with the trace context, the uploader, and
    /// `ours`, all of our headers sealed; persistent.
    pub fn copy(&self, ours: Vec<(&str, AMQPValue)>) -> BasicProperties {
        let base = self.trace.stamp(copy_of(self.properties));
        let mut headers = base.headers().clone().unwrap_or_default();
        if let Some(by) = self.uploaded_by {
            headers.insert(H_UPLOADED_BY.into(), text(by));
        }
        for (k, v) in ours {
            headers.insert(k.into(), v);
        }
        // Ours are text and integers only, so this always seals.
        self.seal.seal(&mut headers, self.message);
        base.with_headers(headers).with_delivery_mode(2)
    }
}

/// The failure context written into a dead letter's headers.
pub struct DeadLetterInfo<'a> {
    pub rejected: &'a Rejected,
    pub attempts: i64,
    pub consumer: &'a str,
    /// How long the dead letter is kept (`amqp.dead_letter_ttl`), as its AMQP `expiration`.
    pub ttl: Option<std::time::Duration>,
}

/// Publishes the original body, byte for byte, as a copy (see [`Original::copy`]) with our
/// `x-edc-*` headers, to `exchange` with the work queue it came from as `routing_key`, and waits for
/// the broker's confirm. Only an `Ack` counts: anything else is an
/// error and the caller must not ack the original.
pub async fn publish_dead_letter(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    original: &Original<'_>,
    info: &DeadLetterInfo<'_>,
) -> Result<(), BrokerError> {
    let now = chrono::Utc::now();
    let mut ours = vec![
        (H_KIND, text(info.rejected.kind.as_str())),
        (H_ERROR, text(&info.rejected.reason)),
        (H_ATTEMPTS, AMQPValue::LongLongInt(info.attempts)),
        (H_FAILED_AT, text(&rfc3339(now))),
        (H_CONSUMER, text(info.consumer)),
        (H_QUEUE, text(routing_key)),
    ];
    let ends = info.ttl.and_then(|ttl| {
        let end = now.checked_add_signed(chrono::Duration::from_std(ttl).ok()?)?;
        Some((ttl, end))
    });
    if let Some((_, end)) = ends {
        ours.push((H_EXPIRES_AT, text(&rfc3339(end))));
    }
    let mut props = original.copy(ours);
    // Our expiration only: an uploader's would make its dead letter vanish.
    if let Some(ttl) = info.ttl {
        props = props.with_expiration(ShortString::from(ttl.as_millis().max(1).to_string()));
    }
    publish_to(channel, exchange, routing_key, original.body, props).await
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parks a message in a delay queue for a later attempt: a copy with the count of failed attempts
/// and why the last one failed. Waits for the broker's confirm, like a dead letter.
pub async fn publish_retry(
    channel: &Channel,
    delay_queue: &str,
    original: &Original<'_>,
    failed: u32,
    reason: &str,
) -> Result<(), BrokerError> {
    let props = original.copy(vec![
        (H_RETRIES, AMQPValue::LongLongInt(i64::from(failed))),
        (H_RETRY_REASON, text(reason)),
    ]);
    publish_to(channel, "", delay_queue, original.body, props).await
}

/// Postpones a message (not its fault: the database is unavailable): a copy through a delay queue,
/// keeping the count of attempts that failed before. Waits for the broker's confirm.
pub async fn publish_postponed(
    channel: &Channel,
    delay_queue: &str,
    original: &Original<'_>,
    failed: u32,
) -> Result<(), BrokerError> {
    let props = original.copy(vec![(H_RETRIES, AMQPValue::LongLongInt(i64::from(failed)))]);
    publish_to(channel, "", delay_queue, original.body, props).await
}

/// Publishes with confirms; only an `Ack` counts.
pub async fn publish_to(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), BrokerError> {
    // A copy must fit in one content-header frame of the size we negotiated: the uploader's
    // largest headers are left out if they do not (see `wire::fit`).
    let props = super::wire::fit(props, channel.frame_max());
    let confirm = channel
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(routing_key),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        )
        .await
        .map_err(|e| BrokerError::failed("publish", e))?
        .await
        .map_err(|e| BrokerError::failed("publish confirm", e))?;
    confirmed(confirm)
}

/// A publisher confirm as a result: only a plain `Ack` counts. An `Ack` that carries the message
/// back means it was unroutable (published with `mandatory`).
pub fn confirmed(confirm: Confirmation) -> Result<(), BrokerError> {
    let why = match confirm {
        Confirmation::Ack(None) => return Ok(()),
        Confirmation::Ack(Some(_)) => UNROUTABLE,
        Confirmation::Nack(_) => "the broker refused it (nack)",
        Confirmation::NotRequested => "the channel is not in confirm mode",
    };
    Err(BrokerError::Refused(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in headers {
            t.insert((*k).into(), v.clone());
        }
        BasicProperties::default().with_headers(t)
    }

    fn names(p: &BasicProperties) -> Vec<&str> {
        let h = p.headers().as_ref().expect("headers");
        h.inner().keys().map(|k| k.as_str()).collect()
    }

    #[test]
    fn a_copy_keeps_the_uploaders_properties_less_those_that_must_not_travel() {
        let original = with(&[
            (H_KIND, text("invalid")),
            ("x-edc-anything", text("x")),
            (H_DELIVERY_COUNT, AMQPValue::LongLongInt(4)),
            ("traceparent", text("00-abc")),
        ])
        .with_user_id(ShortString::from("site-17"))
        .with_expiration(ShortString::from("1"))
        .with_message_id(ShortString::from("m"))
        .with_correlation_id(ShortString::from("c"))
        .with_reply_to(ShortString::from("r"))
        .with_content_type(ShortString::from("application/json"))
        .with_app_id(ShortString::from("site-app"))
        .with_timestamp(7)
        .with_priority(3);
        let copy = copy_of(&original);
        assert_eq!(copy.user_id(), &None);
        assert_eq!(copy.expiration(), &None);
        assert_eq!(names(&copy), vec!["traceparent"]);
        // Everything else as it was.
        let mut headers = FieldTable::default();
        headers.insert("traceparent".into(), text("00-abc"));
        let expected = original
            .clone()
            .with_headers(headers)
            .with_user_id(ShortString::from("x"))
            .with_expiration(ShortString::from("1"));
        let back = copy
            .with_user_id(ShortString::from("x"))
            .with_expiration(ShortString::from("1"));
        assert_eq!(back, expected);
        assert_eq!(
            copy_of(&BasicProperties::default()),
            BasicProperties::default()
        );
    }

    #[test]
    fn a_copy_carries_our_headers_and_the_uploader_under_one_seal_and_nothing_of_theirs() {
        let seal = Seal::new(&[7u8; 32]);
        let properties = with(&[
            (H_UPLOADED_BY, text("mallory")),
            (H_RETRIES, AMQPValue::LongLongInt(9)),
            ("x-site", text("kept")),
        ])
        .with_user_id(ShortString::from("site-17"));
        let message = Bound {
            body_sha256: "abc",
            message_id: Some("m1"),
        };
        let original = Original {
            body: b"{}",
            properties: &properties,
            message,
            uploaded_by: Some("site-17"),
            trace: TraceContext::default(),
            seal: &seal,
        };
        let copy = original.copy(vec![(H_RETRIES, AMQPValue::LongLongInt(2))]);
        assert_eq!(copy.user_id(), &None);
        assert_eq!(copy.delivery_mode(), &Some(2));
        assert_eq!(
            names(&copy),
            vec!["x-edc-retries", "x-edc-seal", "x-edc-uploaded-by", "x-site"]
        );
        let ours = seal.open(&copy, message);
        assert_eq!(ours.failed_attempts(), 2);
        assert_eq!(ours.uploaded_by(), Some("site-17"));
        // No uploader known: none claimed on its behalf.
        let anonymous = Original {
            uploaded_by: None,
            ..original
        };
        let copy = anonymous.copy(vec![]);
        assert_eq!(seal.open(&copy, message).uploaded_by(), None);
        assert_eq!(names(&copy), vec!["x-edc-seal", "x-site"]);
    }
}
