//! Publishing with publisher confirms: dead letters, delayed retries, postponed messages. Only a
//! broker `ack` of the publish counts; the original delivery is acked only after it.

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection};

use super::BrokerError;
use crate::pipeline::Rejected;

/// Header names we add to a dead letter. Their values are ours alone, never the payload's.
pub const H_KIND: &str = "x-edc-error-kind";
pub const H_ERROR: &str = "x-edc-error";
pub const H_ATTEMPTS: &str = "x-edc-attempts";
pub const H_FAILED_AT: &str = "x-edc-failed-at";
pub const H_CONSUMER: &str = "x-edc-consumer";
/// On a dead letter kept for `amqp.dead_letter_ttl`: when it expires (RFC 3339), so that a copy put
/// back by the dlq tools keeps the same end, not a fresh one.
pub const H_EXPIRES_AT: &str = "x-edc-expires-at";
/// On a message parked for a delayed retry: how many attempts have failed so far.
pub const H_RETRIES: &str = "x-edc-retries";
pub const H_RETRY_REASON: &str = "x-edc-retry-reason";
/// Seals `x-edc-retries` on a message parked in a delay queue: an HMAC of the count, the body's hash
/// and the message id, so that only a count written by edc-ingest is believed.
pub const H_SEAL: &str = "x-edc-seal";
/// When a message was published, in milliseconds since the epoch: RabbitMQ's incoming-message
/// interceptor (`message_interceptors.incoming.set_header_timestamp`) adds it, and so does
/// `edc-ingest publish`. The daemon reads it for `edc_publish_to_commit_seconds`.
pub const H_TIMESTAMP_MS: &str = "timestamp_in_ms";
/// The prefix of every header edc-ingest writes. Headers with it that arrive from an uploader are
/// not ours: they are dropped from every copy we publish, so they can never pass for ours.
pub const OUR_PREFIX: &str = "x-edc-";

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

/// The failure context written into a dead letter's headers.
pub struct DeadLetterInfo<'a> {
    pub rejected: &'a Rejected,
    pub attempts: i64,
    pub consumer: &'a str,
    /// How long the dead letter is kept (`amqp.dead_letter_ttl`), as its AMQP `expiration`.
    pub ttl: Option<std::time::Duration>,
}

/// Publishes the original body, byte for byte, with the original properties plus our `x-edc-*`
/// headers, and waits for the broker's confirm. Only an `Ack` counts: anything else is an error and
/// the caller must not ack the original.
pub async fn publish_dead_letter(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    original: &BasicProperties,
    info: &DeadLetterInfo<'_>,
) -> Result<(), BrokerError> {
    let mut headers = headers_without_ours(original);
    headers.insert(H_KIND.into(), text(info.rejected.kind.as_str()));
    headers.insert(H_ERROR.into(), text(&info.rejected.reason));
    headers.insert(H_ATTEMPTS.into(), AMQPValue::LongLongInt(info.attempts));
    headers.insert(
        H_FAILED_AT.into(),
        text(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    headers.insert(H_CONSUMER.into(), text(info.consumer));
    // Our expiration only: an uploader's would make its dead letter vanish.
    let mut props = without_expiration(original)
        .with_headers(headers)
        .with_delivery_mode(2);
    if let Some(ttl) = info.ttl {
        props = props.with_expiration(ShortString::from(ttl.as_millis().max(1).to_string()));
        let ends =
            chrono::Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::TimeDelta::MAX);
        let mut headers = props.headers().clone().unwrap_or_default();
        headers.insert(
            H_EXPIRES_AT.into(),
            text(&ends.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        props = props.with_headers(headers);
    }
    publish_to(channel, exchange, routing_key, body, props).await
}

/// Parks a message in a delay queue: original body and properties, plus the count of failed
/// attempts. Waits for the broker's confirm, like a dead letter.
pub async fn publish_retry(
    channel: &Channel,
    delay_queue: &str,
    body: &[u8],
    original: &BasicProperties,
    failed: u32,
    reason: &str,
    seal: &str,
) -> Result<(), BrokerError> {
    let mut headers = headers_without_ours(original);
    headers.insert(H_RETRIES.into(), AMQPValue::LongLongInt(i64::from(failed)));
    headers.insert(H_RETRY_REASON.into(), text(reason));
    headers.insert(H_SEAL.into(), text(seal));
    let props = original.clone().with_headers(headers).with_delivery_mode(2);
    publish_to(channel, "", delay_queue, body, props).await
}

/// Publishes with confirms; only an `Ack` counts.
pub async fn publish_to(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), BrokerError> {
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
        Confirmation::Ack(Some(_)) => "unroutable: no queue is bound for it",
        Confirmation::Nack(_) => "the broker refused it (nack)",
        Confirmation::NotRequested => "the channel is not in confirm mode",
    };
    Err(BrokerError::Refused(why))
}

/// The original properties, less the `expiration` (lapin has no way to unset one field).
pub fn without_expiration(p: &BasicProperties) -> BasicProperties {
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
    keep!(user_id, with_user_id);
    keep!(app_id, with_app_id);
    keep!(cluster_id, with_cluster_id);
    out
}

/// The original headers, less any that claim our prefix (see [`OUR_PREFIX`]).
pub fn headers_without_ours(original: &BasicProperties) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(h) = original.headers() {
        for (k, v) in h.inner() {
            if !k.as_str().starts_with(OUR_PREFIX) {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    headers
}

/// Makes and checks the seal of our attempt count (see [`H_SEAL`]). Its key is derived from the
/// pseudonymisation key, which every replica shares and no uploader knows.
#[derive(Clone)]
pub struct Seal {
    mac: hmac::Hmac<sha2::Sha256>,
}

impl Seal {
    pub fn new(key: &[u8]) -> Seal {
        use hmac::KeyInit;
        Seal {
            mac: hmac::Hmac::new_from_slice(key).expect("HMAC takes a key of any length"),
        }
    }

    /// The seal of `failed` attempts of the message with this body hash and id.
    pub fn seal(&self, failed: u32, body_sha256: &str, message_id: Option<&str>) -> String {
        use hmac::Mac;
        let mut mac = self.mac.clone();
        mac.update(&failed.to_be_bytes());
        mac.update(body_sha256.as_bytes());
        mac.update(&[0x1f]);
        mac.update(message_id.unwrap_or("").as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The attempts that already failed, from our headers: the sealed count, or 0 when there is
    /// none or its seal does not match (an uploader's header, or a copy of another message's).
    pub fn failed_attempts(
        &self,
        properties: &BasicProperties,
        body_sha256: &str,
        message_id: Option<&str>,
    ) -> u32 {
        let Some(headers) = properties.headers() else {
            return 0;
        };
        let count = match headers.inner().get(H_RETRIES) {
            Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).ok(),
            Some(AMQPValue::LongInt(n)) => u32::try_from(*n).ok(),
            _ => None,
        };
        let seal = match headers.inner().get(H_SEAL) {
            Some(AMQPValue::LongString(s)) => Some(s.as_bytes()),
            _ => None,
        };
        match (count, seal) {
            (Some(n), Some(seal)) => {
                let expected = self.seal(n, body_sha256, message_id);
                // Both are hex of a fixed length; equal length is checked first.
                if seal.len() == expected.len() && subtle_eq(seal, expected.as_bytes()) {
                    n
                } else {
                    0
                }
            }
            _ => 0,
        }
    }
}

/// Compares without stopping at the first difference.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    #[test]
    fn only_a_count_sealed_by_us_for_this_very_message_is_believed() {
        let seal = Seal::new(&[9u8; 32]);
        let sealed = seal.seal(3, "abc", Some("m1"));
        let ours = with(&[
            (H_RETRIES, AMQPValue::LongLongInt(3)),
            (H_SEAL, text(&sealed)),
        ]);
        assert_eq!(seal.failed_attempts(&ours, "abc", Some("m1")), 3);
        // Another message (body or id) with the same header: not believed.
        assert_eq!(seal.failed_attempts(&ours, "abd", Some("m1")), 0);
        assert_eq!(seal.failed_attempts(&ours, "abc", Some("m2")), 0);
        // An uploader's count, without a seal, or with a made-up one; another count under our seal.
        let forged = with(&[(H_RETRIES, AMQPValue::LongLongInt(19))]);
        assert_eq!(seal.failed_attempts(&forged, "abc", Some("m1")), 0);
        let made_up = with(&[
            (H_RETRIES, AMQPValue::LongLongInt(19)),
            (H_SEAL, text(&"0".repeat(32))),
        ]);
        assert_eq!(seal.failed_attempts(&made_up, "abc", Some("m1")), 0);
        let moved = with(&[
            (H_RETRIES, AMQPValue::LongLongInt(4)),
            (H_SEAL, text(&sealed)),
        ]);
        assert_eq!(seal.failed_attempts(&moved, "abc", Some("m1")), 0);
        // Another key (a replica with another pseudonymisation key) does not recognise it.
        assert_eq!(
            Seal::new(&[8u8; 32]).failed_attempts(&ours, "abc", Some("m1")),
            0
        );
    }

    #[test]
    fn an_uploaders_expiration_is_not_copied_and_everything_else_is() {
        let original = with(&[("h", text("v"))])
            .with_expiration(ShortString::from("1"))
            .with_message_id(ShortString::from("m"))
            .with_reply_to(ShortString::from("r"))
            .with_timestamp(7)
            .with_priority(3);
        let copy = without_expiration(&original);
        assert_eq!(copy.expiration(), &None);
        assert_eq!(
            copy.clone().with_expiration(ShortString::from("1")),
            original
        );
    }

    #[test]
    fn uploader_headers_with_our_prefix_are_dropped_and_the_rest_kept() {
        let original = with(&[
            (H_KIND, text("invalid")),
            ("x-edc-anything", text("x")),
            ("traceparent", text("00-abc")),
        ]);
        let kept = headers_without_ours(&original);
        let names: Vec<&str> = kept.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["traceparent"]);
    }
}
