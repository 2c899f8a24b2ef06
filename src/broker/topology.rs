//! The topology, all durable, declared by the daemon and the tools alike (idempotent):
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

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use super::publish::text;
use crate::config::{AmqpSettings, RetrySettings};

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
