//! The RabbitMQ side: connecting (with fail-over across the nodes of `amqp.url`), declaring the
//! topology, and publishing dead letters with publisher confirms.
//!
//! Topology, all durable:
//! ```text
//! uploaders --> [edc.records]         quorum queue, x-dead-letter-exchange=edc.dlx, x-delivery-limit
//!           --> [edc.records.urgent]  the fast lane, declared the same way
//!                    |
//!        edc-ingest publishes dead letters (confirmed), and the broker's delivery-limit backstop
//!                    v
//!               (edc.dlx) fanout --> [edc.records.dlq] quorum queue
//!
//! failed attempt n --> [edc.records.retry.<delay>ms]  quorum queue, x-message-ttl = the n-th backoff
//!                           |  expires: dead-lettered (at-least-once) through the default exchange
//!                           v
//!                      [edc.records] again
//! ```
//! One delay queue per backoff step keeps every message in a queue on the same TTL, so none waits
//! behind a longer-lived one.
//!
//! Delivery limits. RabbitMQ 4 gives a quorum queue that declares none a limit of 20, counts every
//! return of a message towards it (a requeue, a closed channel, a lost connection), and past it
//! dead-letters the message, or drops it if the queue has no dead-letter exchange; 3.10 has no
//! default. The broker refuses a declaration whose `x-delivery-limit` differs from the existing
//! queue's, added or removed alike (on 3.10 and 4.0), so none of these arguments can change without
//! breaking the daemon's start against queues an earlier release declared. They stay as they were:
//! - work queue and fast lane: `x-delivery-limit` = `amqp.delivery_limit` and the dead-letter
//!   exchange, on every version: past the limit the broker dead-letters the message (the backstop);
//! - delay queues: no limit declared. 4.x applies 20, and past it dead-letters the message to the
//!   work queue, where it was going anyway. Nothing consumes from them.
//! - dead-letter queue: no limit declared. On 4.x a dead letter returned 20 times is dropped, so
//!   nothing of ours ever returns one (`tools::dlq` puts back a confirmed copy). Never declare it
//!   with `x-delivery-limit: -1`: 4.0 reads that as no limit, 3.10 as dropping at the first return.

use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::config::{AmqpSettings, RetrySettings, SecretUrl, redact_url};
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

/// Connects to the first node of `url` (a comma-separated list) that answers within `limit`,
/// starting at `start` and wrapping around. Returns the connection and the index of the node that
/// answered.
pub async fn connect(
    url: &SecretUrl,
    start: usize,
    name: &str,
    limit: std::time::Duration,
) -> Result<(Connection, usize), String> {
    let nodes: Vec<&str> = url.expose().split(',').map(str::trim).collect();
    let mut errors = Vec::new();
    for i in 0..nodes.len() {
        let idx = (start + i) % nodes.len();
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(name.to_string()));
        match within(
            limit,
            &redact_url(nodes[idx]),
            Connection::connect(nodes[idx], props),
        )
        .await
        {
            Ok(conn) => return Ok((conn, idx)),
            Err(e) => errors.push(e.message),
        }
    }
    Err(errors.join("; "))
}

/// Runs one broker operation with a deadline. lapin waits as long as the broker does; a connection
/// that is half dead, or a node that accepts a socket but never finishes starting, would hold the
/// caller for ever. An operation past its deadline is an error like any other broker failure.
pub async fn within<T, E: std::fmt::Display>(
    limit: std::time::Duration,
    what: &str,
    op: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(limit, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BrokerError {
            message: format!("{what}: {e}"),
            timed_out: false,
        }),
        Err(_) => Err(BrokerError {
            message: format!("{what}: no answer from the broker within {limit:?}"),
            timed_out: true,
        }),
    }
}

/// A broker operation that failed, or got no answer within its deadline (`timed_out`).
#[derive(Clone, Debug)]
pub struct BrokerError {
    pub message: String,
    pub timed_out: bool,
}

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<BrokerError> for String {
    fn from(e: BrokerError) -> String {
        e.message
    }
}

/// Runs one broker operation of a session within `limit`, giving up at once if the session is
/// already `broken`. An overrun marks it broken: the supervisor then drops it and connects again.
pub async fn in_session<T, E: std::fmt::Display>(
    broken: &tokio_util::sync::CancellationToken,
    limit: std::time::Duration,
    what: &str,
    op: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    let attempt = tokio::select! {
        biased;
        _ = broken.cancelled() => return Err(format!("{what}: the broker session is gone")),
        attempt = within(limit, what, op) => attempt,
    };
    attempt.map_err(|e| {
        if e.timed_out {
            broken.cancel();
            format!("{e}; the session is dropped")
        } else {
            e.message
        }
    })
}

/// Closes a connection, waiting at most `limit` for the broker's answer.
pub async fn close(connection: &Connection, limit: std::time::Duration, code: u16, reason: &str) {
    let closing = connection.close(code, ShortString::from(reason));
    let _ = within(limit, "close", closing).await;
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_string()))
}

/// The delay queue in which a message waits `delay` before returning to `queue`. The name carries the
/// delay (its TTL), so a change of the retry settings declares new queues instead of clashing with
/// the old ones (which keep draining into the work queue).
pub fn retry_queue(queue: &str, delay: std::time::Duration) -> String {
    format!("{queue}.retry.{}ms", delay.as_millis())
}

/// Every delay queue the retry settings use, in attempt order.
pub fn retry_queues(queue: &str, retry: &RetrySettings) -> Vec<String> {
    (1..retry.max_attempts.max(2))
        .map(|failed| retry_queue(queue, retry.delay_after(failed)))
        .collect()
}

/// Declares exchanges, queues and bindings. Idempotent; run on every (re)connect.
pub async fn declare(
    channel: &Channel,
    s: &AmqpSettings,
    retry: &RetrySettings,
) -> lapin::Result<()> {
    channel
        .exchange_declare(
            ShortString::from(s.dead_letter_exchange.as_str()),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut dlq_args = FieldTable::default();
    dlq_args.insert("x-queue-type".into(), text("quorum"));
    channel
        .queue_declare(
            ShortString::from(s.dead_letter_queue.as_str()),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            dlq_args,
        )
        .await?;
    channel
        .queue_bind(
            ShortString::from(s.dead_letter_queue.as_str()),
            ShortString::from(s.dead_letter_exchange.as_str()),
            ShortString::from(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for queue in [&s.queue, &s.urgent_queue] {
        declare_work_queue(channel, s, retry, queue).await?;
    }
    Ok(())
}

/// A work queue (a lane) and the delay queues that lead back into it.
async fn declare_work_queue(
    channel: &Channel,
    s: &AmqpSettings,
    retry: &RetrySettings,
    queue: &str,
) -> lapin::Result<()> {
    channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            work_queue_args(s),
        )
        .await?;
    // At least the first delay queue: postponed messages (an outage) wait in it too.
    for failed in 1..retry.max_attempts.max(2) {
        let delay = retry.delay_after(failed);
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), text("quorum"));
        let ttl = delay.as_millis().min(i64::MAX as u128) as i64;
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        args.insert("x-dead-letter-exchange".into(), text(""));
        args.insert("x-dead-letter-routing-key".into(), text(queue));
        // Expired messages move on only once the work queue confirmed them.
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
        channel
            .queue_declare(
                ShortString::from(retry_queue(queue, delay)),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await?;
    }
    Ok(())
}

pub fn work_queue_args(s: &AmqpSettings) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), text("quorum"));
    args.insert(
        "x-dead-letter-exchange".into(),
        text(&s.dead_letter_exchange),
    );
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(s.delivery_limit)),
    );
    args
}

/// A channel in confirm mode, for publishing dead letters.
pub async fn confirm_channel(conn: &Connection) -> lapin::Result<Channel> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
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
) -> Result<(), String> {
    let mut headers = original.headers().clone().unwrap_or_default();
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
) -> Result<(), String> {
    let mut headers = original.headers().clone().unwrap_or_default();
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
) -> Result<(), String> {
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
        .map_err(|e| format!("publish failed: {e}"))?
        .await
        .map_err(|e| format!("publish confirm failed: {e}"))?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(format!(
            "unroutable: no queue bound for {exchange}/{routing_key}"
        )),
        Confirmation::Nack(_) => Err("the broker refused the message (nack)".into()),
        Confirmation::NotRequested => Err("the channel is not in confirm mode".into()),
    }
}

/// How many times this message was delivered before, as far as the broker says (quorum queues count
/// in `x-delivery-count`).
pub fn previous_deliveries(props: &BasicProperties) -> i64 {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => Some(n),
            AMQPValue::LongInt(n) => Some(i64::from(n)),
            AMQPValue::LongUInt(n) => Some(i64::from(n)),
            AMQPValue::ShortInt(n) => Some(i64::from(n)),
            _ => None,
        })
        .unwrap_or(0)
}
