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
/// On a message parked for a delayed retry: how many attempts have failed so far.
pub const H_RETRIES: &str = "x-edc-retries";
pub const H_RETRY_REASON: &str = "x-edc-retry-reason";
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
    let props = original.clone().with_headers(headers).with_delivery_mode(2);
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
) -> Result<(), BrokerError> {
    let mut headers = headers_without_ours(original);
    headers.insert(H_RETRIES.into(), AMQPValue::LongLongInt(i64::from(failed)));
    headers.insert(H_RETRY_REASON.into(), text(reason));
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
