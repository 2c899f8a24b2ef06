//! One job: a delivery in, exactly one settlement out.
//!
//! ```text
//! delivery -> prepare (parse, validate, de-identify; pure) -> store (one transaction) -> ack
//!                 |                                              |
//!                 +-- rejected ------> rejections row -> dead letter (confirmed) -> ack
//!                                     transient error -> retry with backoff until the job deadline,
//!                                                        then give the message back (nack, requeue)
//! ```
//!
//! [`run_job`] decides the [`Fate`]; [`settle`] is the only code that acks or nacks. The ack goes out
//! only after COMMIT returned (or the dead letter was confirmed). A panic anywhere in the job is caught
//! here; the worker lives on and the message is dead-lettered as `panic`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::amqp::{self, DeadLetterInfo};
use crate::app::Context;
use crate::pipeline::persist::{self, PersistError, RejectionRow, Stored};
use crate::pipeline::{self, RejectKind, Rejected};

/// What is to become of a delivery.
#[derive(Debug)]
pub enum Fate {
    /// Committed (or recognised as already committed): ack.
    Done(Stored),
    /// Refused for good and its `rejections` row committed: dead-letter, then ack.
    DeadLetter(Rejected),
    /// Not the message's fault (database unavailable, deadline, shutdown): give it back.
    Requeue(String),
}

/// Everything a job needs from its AMQP session.
pub struct SessionHandle {
    /// Confirm-mode channel for dead letters.
    pub publisher: lapin::Channel,
}

pub async fn process(ctx: &Arc<Context>, session: &SessionHandle, delivery: Delivery) {
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_string());
    let span = tracing::info_span!(
        "job",
        message_id = message_id.as_deref().unwrap_or("-"),
        tag = delivery.delivery_tag,
        record_id = tracing::field::Empty,
        version = tracing::field::Empty,
    );
    async {
        let deadline = Instant::now() + ctx.settings.job_timeout;
        let job = AssertUnwindSafe(run_job(ctx, &delivery, message_id.as_deref(), deadline));
        let fate = match tokio::time::timeout_at(deadline, job.catch_unwind()).await {
            Ok(Ok(fate)) => fate,
            Ok(Err(panic)) => {
                let rejected =
                    Rejected::new(RejectKind::Panic, panic_reason(&*panic, &delivery.data));
                // The rejection row still has to be written; that is a (short) job of its own.
                match record_rejection(
                    ctx,
                    &delivery,
                    message_id.as_deref(),
                    &rejected,
                    deadline + Duration::from_secs(5),
                )
                .await
                {
                    Ok(()) => Fate::DeadLetter(rejected),
                    Err(e) => Fate::Requeue(e),
                }
            }
            Err(_) => Fate::Requeue(format!(
                "job deadline of {:?} passed",
                ctx.settings.job_timeout
            )),
        };
        settle(ctx, session, delivery, fate).await;
    }
    .instrument(span)
    .await
}

fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

async fn run_job(
    ctx: &Arc<Context>,
    delivery: &Delivery,
    message_id: Option<&str>,
    deadline: Instant,
) -> Fate {
    #[cfg(feature = "fault-injection")]
    crate::fault::inject(&delivery.data);

    let registry = ctx.registry();
    let prepared = pipeline::prepare(
        &delivery.data,
        ctx.settings.max_message_bytes,
        &registry,
        &ctx.pseudonymizer,
    );
    drop(registry);
    let rejected = match prepared {
        Err(rejected) => rejected,
        Ok(record) => {
            let span = tracing::Span::current();
            span.record("record_id", tracing::field::display(record.record_id));
            span.record("version", record.version);
            let hash = sha256_hex(&delivery.data);
            let stored = retry(ctx, deadline, || async {
                let client = ctx.pool.get().await?;
                persist::store(&client, &record, message_id, &hash).await
            })
            .await;
            match stored {
                Ok(Stored::Conflict) => Rejected {
                    kind: RejectKind::Conflict,
                    reason: format!(
                        "record {} version {} is already stored with a different payload",
                        record.record_id, record.version
                    ),
                    record_id: Some(record.record_id),
                    batch_id: record.batch_id,
                },
                Ok(stored) => return Fate::Done(stored),
                Err(e @ PersistError::Permanent(_)) => persist::failed(&e, &record),
                Err(PersistError::Transient(e)) => return Fate::Requeue(e),
            }
        }
    };
    match record_rejection(ctx, delivery, message_id, &rejected, deadline).await {
        Ok(()) => Fate::DeadLetter(rejected),
        Err(e) => Fate::Requeue(e),
    }
}

async fn record_rejection(
    ctx: &Arc<Context>,
    delivery: &Delivery,
    message_id: Option<&str>,
    rejected: &Rejected,
    deadline: Instant,
) -> Result<(), String> {
    let body_sha256 = sha256_hex(&delivery.data);
    let attempts = attempts(delivery) as i32;
    let row = RejectionRow {
        rejected,
        message_id,
        body_sha256: &body_sha256,
        attempts,
        consumer: &ctx.consumer_name,
    };
    retry(ctx, deadline, || async {
        let client = ctx.pool.get().await?;
        persist::record_rejection(&client, &row).await
    })
    .await
    .map_err(|e| e.to_string())
}

fn attempts(delivery: &Delivery) -> i64 {
    amqp::previous_deliveries(&delivery.properties) + 1
}

/// Runs `op` until it succeeds, fails permanently, the deadline passes or shutdown begins. Transient
/// errors wait with capped exponential backoff in between.
async fn retry<T, F, Fut>(ctx: &Context, deadline: Instant, mut op: F) -> Result<T, PersistError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PersistError>>,
{
    let mut wait = Duration::from_millis(50);
    loop {
        match op().await {
            Err(PersistError::Transient(e)) => {
                let now = Instant::now();
                if now + wait >= deadline || ctx.shutdown.is_cancelled() {
                    return Err(PersistError::Transient(e));
                }
                warn!(error = %e, retry_in = ?wait, "database unavailable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.shutdown.cancelled() => return Err(PersistError::Transient(e)),
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Settles a delivery exactly once: the only place that acks or nacks.
pub async fn settle(ctx: &Context, session: &SessionHandle, delivery: Delivery, fate: Fate) {
    let stats = &ctx.stats;
    use std::sync::atomic::Ordering::Relaxed;
    match fate {
        Fate::Done(stored) => {
            if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                // Committed but not acked: the redelivery will be recognised as a duplicate.
                warn!(error = %e, "ack failed after commit; the redelivery will be a duplicate");
            }
            match stored {
                Stored::Created(pipeline::deidentify::Status::Accepted) => {
                    stats.accepted.fetch_add(1, Relaxed)
                }
                Stored::Created(pipeline::deidentify::Status::Queried) => {
                    stats.queried.fetch_add(1, Relaxed)
                }
                Stored::Duplicate | Stored::Conflict => stats.duplicate.fetch_add(1, Relaxed),
            };
            debug!(outcome = ?stored, "stored");
        }
        Fate::DeadLetter(rejected) => {
            let info = DeadLetterInfo {
                rejected: &rejected,
                attempts: attempts(&delivery),
                consumer: &ctx.consumer_name,
            };
            let s = &ctx.settings.amqp;
            match amqp::publish_dead_letter(
                &session.publisher,
                &s.dead_letter_exchange,
                &s.queue,
                &delivery.data,
                &delivery.properties,
                &info,
            )
            .await
            {
                Ok(()) => {
                    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                        warn!(error = %e, "ack failed after dead-lettering; the message will come back");
                    }
                    stats.dead_lettered(rejected.kind);
                    info!(kind = %rejected.kind, reason = %rejected.reason, record_id = ?rejected.record_id, "dead-lettered");
                }
                Err(e) => {
                    warn!(error = %e, kind = %rejected.kind, "dead letter not confirmed; giving the message back");
                    requeue(ctx, delivery).await;
                }
            }
        }
        Fate::Requeue(reason) => {
            warn!(%reason, "giving the message back to the queue");
            requeue(ctx, delivery).await;
        }
    }
}

pub async fn requeue(ctx: &Context, delivery: Delivery) {
    ctx.stats
        .requeued
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let opts = BasicNackOptions {
        requeue: true,
        multiple: false,
    };
    if let Err(e) = delivery.acker.nack(opts).await {
        debug!(error = %e, "nack failed; the broker returns the message when the channel closes");
    }
}

/// The panic's own message, unless it quotes any text found in the body (a panic message built from
/// a value could carry patient data into headers and logs).
fn panic_reason(panic: &(dyn std::any::Any + Send), body: &[u8]) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into());
    let quotes_body = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| quotes_any_string(&v, &msg))
        .unwrap_or(true);
    let msg: String = msg.chars().take(300).collect();
    if quotes_body {
        "job panicked (its message quoted the record and is withheld)".to_string()
    } else {
        format!("job panicked: {msg}")
    }
}

fn quotes_any_string(v: &serde_json::Value, msg: &str) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.len() >= 3 && msg.contains(s.as_str()),
        Value::Number(n) => {
            let s = n.to_string();
            s.len() >= 3 && msg.contains(&s)
        }
        Value::Array(a) => a.iter().any(|x| quotes_any_string(x, msg)),
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| (k.len() >= 3 && msg.contains(k.as_str())) || quotes_any_string(x, msg)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_that_quote_the_record_are_withheld() {
        let body = br#"{"identifiers": {"full_name": "Ada Lovelace"}}"#;
        let quoting: Box<dyn std::any::Any + Send> =
            Box::new(String::from("bad name Ada Lovelace"));
        assert!(!panic_reason(&*quoting, body).contains("Ada"));
        let plain: Box<dyn std::any::Any + Send> = Box::new("index out of bounds");
        assert_eq!(
            panic_reason(&*plain, body),
            "job panicked: index out of bounds"
        );
        assert!(panic_reason(&*plain, b"\xff").contains("withheld"));
    }
}
