//! One job: a delivery in, exactly one settlement out.
//!
//! ```text
//! delivery ─ gate closed? ──────────────────────────────────────────────> postpone
//!    │ redelivered? run alone, count the start in the ledger; too many ──> dead letter `poison`
//!    v
//! prepare (parse, validate, de-identify; pure) ─ refused ─> rejections row ─> dead letter ─> ack
//!    v
//! store (one transaction) ─ committed / duplicate ────────────────────────────────────────> ack
//!    ├─ database unavailable ─> close the gate (consumption pauses) ─────────────────────> postpone
//!    ├─ contention ─> retry at once, a few times
//!    ├─ other error ─> delay queue <queue>.retry.<delay> (confirmed) ─> ack; after the last attempt:
//!    │                 dead letter `failed`
//!    └─ permanent ─> dead letter `failed`
//! ```
//!
//! [`run_job`] decides the [`Fate`]; [`settle`] is the only code that decides an ack or a nack, and an
//! ack is decided only after COMMIT returned (or the broker confirmed the dead letter or the delayed
//! retry). The session's ack task sends them, in order and coalesced ([`crate::acks`]). A
//! panic anywhere in the job is caught here: the worker lives on and the message is dead-lettered as
//! `panic`.
//!
//! Crash loops: a message the broker delivers again (after a crash, a lost channel, a requeue) runs
//! alone, holding the isolation lock exclusively, after its start is counted in `delivery_ledger`.
//! If such a message kills the process, nothing else was running beside it, so no innocent message is
//! blamed; after `crash_limit` counted starts it is dead-lettered as `poison` without running again.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::FutureExt;
use lapin::message::Delivery;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::acks::Acks;
use crate::amqp::{self, DeadLetterInfo};
use crate::app::Context;
use crate::consumer::Lane;
use crate::pipeline::persist::{self, BatchItem, PersistError, RejectionRow, Stored};
use crate::pipeline::{self, Deidentified, RejectKind, Rejected};
use crate::stats::Stats;

/// What is to become of a delivery.
#[derive(Debug)]
pub enum Fate {
    /// Committed (or recognised as already committed): ack.
    Done(Stored),
    /// Refused for good and its `rejections` row committed: dead-letter, then ack.
    DeadLetter { rejected: Rejected, attempts: u32 },
    /// Failed for a reason that may pass: park it in the delay queue for attempt `failed + 1`.
    Retry { failed: u32, reason: String },
    /// Not the message's fault (database unavailable, deadline): it comes back after a short wait,
    /// through the first delay queue. Republished rather than nack-requeued, so an outage never
    /// counts against the queue's delivery limit and never spins a redelivery loop.
    Postpone(String),
}

/// Everything a job needs from its AMQP session.
pub struct SessionHandle {
    /// Confirm-mode channel for dead letters and delayed retries.
    pub publisher: lapin::Channel,
    /// `amqp.operation_timeout`: the longest one publish-and-confirm, ack or nack may take.
    pub operation_timeout: Duration,
    /// Cancelled when the session is gone: by the supervisor when it loses the session, or here when
    /// an operation overran `operation_timeout` (the supervisor then drops the session and connects
    /// again). An operation on a broken session gives up at once: lapin can leave an ack issued as
    /// the connection dies waiting for ever, and a worker stuck there would hold the isolation lock
    /// that every redelivered message needs.
    pub broken: CancellationToken,
    /// The channel's acks and nacks, in order and coalesced; and the count of each lane's
    /// deliveries handed to the workers and not yet acked.
    pub acks: Acks,
}

impl SessionHandle {
    pub fn new(
        publisher: lapin::Channel,
        operation_timeout: Duration,
        stats: Arc<Stats>,
    ) -> SessionHandle {
        let broken = CancellationToken::new();
        SessionHandle {
            publisher,
            operation_timeout,
            acks: Acks::start(broken.clone(), operation_timeout, stats),
            broken,
        }
    }

    /// Runs one broker operation of this session within `operation_timeout`.
    async fn op<T, E: std::fmt::Display>(
        &self,
        what: &str,
        op: impl Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        amqp::in_session(&self.broken, self.operation_timeout, what, op).await
    }
}

/// Identity of a message for the crash ledger: the body's hash and the message id.
fn ledger_key(body_sha256: &str, message_id: Option<&str>) -> String {
    format!("{body_sha256}:{}", message_id.unwrap_or(""))
}

pub async fn process(ctx: &Arc<Context>, session: &SessionHandle, lane: Lane, delivery: Delivery) {
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
        let redelivered =
            delivery.redelivered || amqp::previous_deliveries(&delivery.properties) > 0;
        // A redelivered message runs alone; every other job shares the lock.
        let _isolation = if redelivered {
            Isolation::Alone(ctx.isolation.write().await)
        } else {
            Isolation::Shared(ctx.isolation.read().await)
        };
        if !ctx.gate.is_open() {
            settle(
                ctx,
                session,
                lane,
                delivery,
                Fate::Postpone("database unavailable".into()),
            )
            .await;
            return;
        }
        let body_sha256 = pipeline::sha256_hex(&delivery.data);
        let key = ledger_key(&body_sha256, message_id.as_deref());
        let deadline = Instant::now() + ctx.settings.job_timeout;
        let fate = match crash_check(
            ctx,
            redelivered,
            &key,
            &delivery,
            message_id.as_deref(),
            &body_sha256,
            deadline,
        )
        .await
        {
            Some(fate) => fate,
            None => {
                let job = AssertUnwindSafe(run_job(
                    ctx,
                    &delivery,
                    message_id.as_deref(),
                    &body_sha256,
                    deadline,
                ));
                match tokio::time::timeout_at(deadline, job.catch_unwind()).await {
                    Ok(Ok(fate)) => fate,
                    Ok(Err(panic)) => {
                        let rejected =
                            Rejected::new(RejectKind::Panic, panic_reason(&*panic, &delivery.data));
                        // The rejection row still has to be written: a short job of its own.
                        let grace = Instant::now() + Duration::from_secs(10);
                        reject(
                            ctx,
                            &delivery,
                            message_id.as_deref(),
                            &body_sha256,
                            rejected,
                            grace,
                        )
                        .await
                    }
                    Err(_) => {
                        ctx.gate.close("a job ran past its deadline");
                        Fate::Postpone(format!(
                            "job deadline of {:?} passed",
                            ctx.settings.job_timeout
                        ))
                    }
                }
            }
        };
        let settled_for_good = !matches!(fate, Fate::Postpone(_));
        settle(ctx, session, lane, delivery, fate).await;
        if redelivered && settled_for_good {
            // Best effort: a row left behind only matters if this message crashes us again.
            if let Ok(client) = ctx.pool.get().await {
                let _ = persist::ledger_clear(&client, &key).await;
            }
        }
    }
    .instrument(span)
    .await
}

enum Isolation<'a> {
    Alone(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'a, ()>),
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'a, ()>),
}

/// For a redelivered message: counts this start and decides whether it is poison.
async fn crash_check(
    ctx: &Arc<Context>,
    redelivered: bool,
    key: &str,
    delivery: &Delivery,
    message_id: Option<&str>,
    body_sha256: &str,
    deadline: Instant,
) -> Option<Fate> {
    if !redelivered {
        return None;
    }
    let starts = retry(ctx, deadline, || async {
        let client = ctx.pool.get().await?;
        persist::ledger_start(&client, key, &ctx.instance).await
    })
    .await;
    match starts {
        Ok(n) if n as u32 >= ctx.settings.crash_limit => {
            let rejected = Rejected::new(
                RejectKind::Poison,
                format!(
                    "the process died {n} times while handling this message; it is not run again"
                ),
            );
            let fate = reject(ctx, delivery, message_id, body_sha256, rejected, deadline).await;
            Some(match fate {
                Fate::DeadLetter { rejected, .. } => Fate::DeadLetter {
                    rejected,
                    attempts: n as u32,
                },
                other => other,
            })
        }
        Ok(_) => None,
        Err(e) => Some(unavailable(ctx, e)),
    }
}

/// Attempts that already failed before this delivery, from our own header.
fn failed_attempts(delivery: &Delivery) -> u32 {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(amqp::H_RETRIES).cloned())
        .and_then(|v| match v {
            lapin::types::AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            lapin::types::AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            _ => None,
        })
        .unwrap_or(0)
}

async fn run_job(
    ctx: &Arc<Context>,
    delivery: &Delivery,
    message_id: Option<&str>,
    body_sha256: &str,
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
    let record = match prepared {
        Err(rejected) => {
            return reject(ctx, delivery, message_id, body_sha256, rejected, deadline).await;
        }
        Ok(record) => record,
    };
    let span = tracing::Span::current();
    span.record("record_id", tracing::field::display(record.record_id));
    span.record("version", record.version);
    let stored = retry(ctx, deadline, || async {
        let client = ctx.pool.get().await?;
        persist::store(&client, item(delivery, &record, message_id, body_sha256)).await
    })
    .await;
    fate_of_store(
        ctx,
        delivery,
        message_id,
        body_sha256,
        &record,
        stored,
        deadline,
    )
    .await
}

/// What becomes of a delivery once its record's store returned.
async fn fate_of_store(
    ctx: &Arc<Context>,
    delivery: &Delivery,
    message_id: Option<&str>,
    body_sha256: &str,
    record: &Deidentified,
    stored: Result<Stored, PersistError>,
    deadline: Instant,
) -> Fate {
    let rejected = match stored {
        Ok(Stored::Conflict) => Rejected {
            kind: RejectKind::Conflict,
            reason: format!(
                "record {} version {} is already stored with a different payload",
                record.record_id, record.version
            ),
            record_id: Some(record.record_id),
            batch_id: record.batch_id,
            batch_size: record.batch_size,
        },
        Ok(Stored::Duplicate { reupload }) => {
            // A re-upload counts on its batch receipt; a reply_to wants its answer. A plain
            // redelivery needs neither, and costs no write.
            let it = item(delivery, record, message_id, body_sha256);
            if (reupload && record.batch_id.is_some()) || it.reply_to.is_some() {
                let noted = retry(ctx, deadline, || async {
                    let client = ctx.pool.get().await?;
                    persist::note_duplicate(&client, &it).await
                })
                .await;
                if let Err(e) = noted {
                    return match e {
                        PersistError::Unavailable(_) => unavailable(ctx, e),
                        other => Fate::Postpone(other.to_string()),
                    };
                }
            }
            return Fate::Done(Stored::Duplicate { reupload });
        }
        Ok(stored) => return Fate::Done(stored),
        Err(e @ PersistError::Permanent(_)) => persist::failed(&e, record),
        Err(PersistError::Retryable(reason)) | Err(PersistError::Contention(reason)) => {
            let failed = failed_attempts(delivery) + 1;
            if failed < ctx.settings.retry.max_attempts {
                return Fate::Retry { failed, reason };
            }
            let mut r = Rejected::new(
                RejectKind::Failed,
                format!("{reason}; gave up after {failed} attempts"),
            );
            r.record_id = Some(record.record_id);
            r.batch_id = record.batch_id;
            let fate = reject(ctx, delivery, message_id, body_sha256, r, deadline).await;
            return match fate {
                Fate::DeadLetter { rejected, .. } => Fate::DeadLetter {
                    rejected,
                    attempts: failed,
                },
                other => other,
            };
        }
        Err(e @ PersistError::Unavailable(_)) => return unavailable(ctx, e),
    };
    reject(ctx, delivery, message_id, body_sha256, rejected, deadline).await
}

/// Several deliveries taken together (`batch_size` > 1): the valid records are stored with one
/// statement, one transaction; everything else is decided per message exactly as in [`process`].
pub async fn process_batch(ctx: &Arc<Context>, session: &SessionHandle, deliveries: Vec<Delivery>) {
    // Redelivered messages go the careful way: alone, counted in the crash ledger.
    let (again, fresh): (Vec<_>, Vec<_>) = deliveries.into_iter().partition(is_redelivered);
    for delivery in again {
        process(ctx, session, Lane::Normal, delivery).await;
    }
    if fresh.is_empty() {
        return;
    }
    let shared = ctx.isolation.read().await;
    if !ctx.gate.is_open() {
        postpone_all(ctx, session, fresh, "database unavailable").await;
        return;
    }
    let deadline = Instant::now() + ctx.settings.job_timeout;
    let job = AssertUnwindSafe(batch_fates(ctx, &fresh, deadline)).catch_unwind();
    match tokio::time::timeout_at(deadline, job).await {
        Ok(Ok(fates)) => {
            for (delivery, fate) in fresh.into_iter().zip(fates) {
                settle(ctx, session, Lane::Normal, delivery, fate).await;
            }
        }
        Ok(Err(_)) => {
            // Something in the batch panicked: run each message alone, so the panic is pinned on
            // its own message and the others are stored (nothing of the batch was committed if the
            // panic came before the statement; if after, the rerun finds duplicates).
            drop(shared);
            for delivery in fresh {
                process(ctx, session, Lane::Normal, delivery).await;
            }
        }
        Err(_) => {
            ctx.gate.close("a batch ran past its deadline");
            postpone_all(ctx, session, fresh, "job deadline passed").await;
        }
    }
}

async fn postpone_all(
    ctx: &Context,
    session: &SessionHandle,
    deliveries: Vec<Delivery>,
    reason: &str,
) {
    for delivery in deliveries {
        let fate = Fate::Postpone(reason.to_string());
        settle(ctx, session, Lane::Normal, delivery, fate).await;
    }
}

/// The AMQP `reply_to` and `correlation_id` of a delivery.
fn reply_of(delivery: &Delivery) -> (Option<&str>, Option<&str>) {
    let p = &delivery.properties;
    (
        p.reply_to()
            .as_ref()
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty()),
        p.correlation_id().as_ref().map(|s| s.as_str()),
    )
}

fn item<'a>(
    delivery: &'a Delivery,
    record: &'a Deidentified,
    message_id: Option<&'a str>,
    payload_sha256: &'a str,
) -> BatchItem<'a> {
    let (reply_to, correlation_id) = reply_of(delivery);
    BatchItem {
        record,
        message_id,
        payload_sha256,
        reply_to,
        correlation_id,
    }
}

fn is_redelivered(delivery: &Delivery) -> bool {
    delivery.redelivered || amqp::previous_deliveries(&delivery.properties) > 0
}

/// The fate of each delivery of a batch, in order.
async fn batch_fates(ctx: &Arc<Context>, deliveries: &[Delivery], deadline: Instant) -> Vec<Fate> {
    let meta: Vec<(Option<String>, String)> = deliveries
        .iter()
        .map(|d| {
            let id = d
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_string());
            (id, pipeline::sha256_hex(&d.data))
        })
        .collect();
    let mut fates: Vec<Option<Fate>> = deliveries.iter().map(|_| None).collect();
    let mut valid = Vec::with_capacity(deliveries.len());
    {
        let registry = ctx.registry();
        for (i, d) in deliveries.iter().enumerate() {
            #[cfg(feature = "fault-injection")]
            crate::fault::inject(&d.data);
            match pipeline::prepare(
                &d.data,
                ctx.settings.max_message_bytes,
                &registry,
                &ctx.pseudonymizer,
            ) {
                Ok(record) => valid.push((i, record)),
                Err(rejected) => {
                    fates[i] = Some(Fate::DeadLetter {
                        rejected,
                        attempts: 0,
                    })
                }
            }
        }
    }
    // Refusals: their rejection rows (one statement each; they are the rare case).
    for (i, fate) in fates.iter_mut().enumerate() {
        if let Some(Fate::DeadLetter { rejected, .. }) = fate.take() {
            let (id, hash) = &meta[i];
            *fate =
                Some(reject(ctx, &deliveries[i], id.as_deref(), hash, rejected, deadline).await);
        }
    }
    // A key twice in one batch (a re-upload next to its original) waits for a statement of its own,
    // after the first has committed: only then can it be told duplicate from conflict.
    let mut seen = std::collections::HashSet::new();
    let (first, repeats): (Vec<_>, Vec<_>) = valid
        .into_iter()
        .partition(|(_, r)| seen.insert((r.record_id, r.version)));
    let items: Vec<BatchItem> = first
        .iter()
        .map(|(i, r)| item(&deliveries[*i], r, meta[*i].0.as_deref(), &meta[*i].1))
        .collect();
    let results = store_split(ctx, &items, deadline).await;
    let mut outcomes: Vec<(usize, &Deidentified, Result<Stored, PersistError>)> = first
        .iter()
        .zip(results)
        .map(|((i, r), stored)| (*i, r, stored))
        .collect();
    for (i, record) in &repeats {
        let (id, hash) = &meta[*i];
        let stored = retry(ctx, deadline, || async {
            let client = ctx.pool.get().await?;
            persist::store(&client, item(&deliveries[*i], record, id.as_deref(), hash)).await
        })
        .await;
        outcomes.push((*i, record, stored));
    }
    for (i, record, stored) in outcomes {
        let (id, hash) = &meta[i];
        let fate = fate_of_store(
            ctx,
            &deliveries[i],
            id.as_deref(),
            hash,
            record,
            stored,
            deadline,
        );
        fates[i] = Some(fate.await);
    }
    fates
        .into_iter()
        .map(|f| f.unwrap_or_else(|| Fate::Postpone("no outcome decided".into())))
        .collect()
}

/// Stores a batch; if the statement fails for anything but an outage, splits it in halves and
/// stores each, down to single records, so one bad record fails alone.
fn store_split<'a>(
    ctx: &'a Arc<Context>,
    items: &'a [BatchItem<'a>],
    deadline: Instant,
) -> futures::future::BoxFuture<'a, Vec<Result<Stored, PersistError>>> {
    Box::pin(async move {
        let stored = retry(ctx, deadline, || async {
            let client = ctx.pool.get().await?;
            persist::store_batch(&client, items).await
        })
        .await;
        match stored {
            Ok(outcomes) => {
                if items.len() > 1 {
                    ctx.stats
                        .batches
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                outcomes.into_iter().map(Ok).collect()
            }
            Err(e @ PersistError::Unavailable(_)) => items.iter().map(|_| Err(e.clone())).collect(),
            Err(e) if items.len() == 1 => vec![Err(e)],
            Err(e) => {
                debug!(error = %e, size = items.len(), "batch failed; splitting it");
                ctx.stats
                    .batch_splits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (left, right) = items.split_at(items.len() / 2);
                let mut out = store_split(ctx, left, deadline).await;
                out.extend(store_split(ctx, right, deadline).await);
                out
            }
        }
    })
}

/// An outage: close the gate so consumption pauses, and give the message back.
fn unavailable(ctx: &Context, e: PersistError) -> Fate {
    let reason = e.to_string();
    ctx.gate.close(&reason);
    Fate::Postpone(reason)
}

/// Commits the `rejections` row; the dead letter itself is published by [`settle`].
async fn reject(
    ctx: &Arc<Context>,
    delivery: &Delivery,
    message_id: Option<&str>,
    body_sha256: &str,
    rejected: Rejected,
    deadline: Instant,
) -> Fate {
    let attempts = failed_attempts(delivery) + 1;
    let (reply_to, correlation_id) = reply_of(delivery);
    let row = RejectionRow {
        rejected: &rejected,
        message_id,
        body_sha256,
        attempts: attempts as i32,
        consumer: &ctx.consumer_name,
        reply_to,
        correlation_id,
    };
    let written = retry(ctx, deadline, || async {
        let client = ctx.pool.get().await?;
        persist::record_rejection(&client, &row).await
    })
    .await;
    match written {
        Ok(()) => Fate::DeadLetter { rejected, attempts },
        Err(e) => unavailable(ctx, e),
    }
}

/// Runs `op`; contention is retried at once a few times. Everything else is returned to the caller.
async fn retry<T, F, Fut>(ctx: &Context, deadline: Instant, mut op: F) -> Result<T, PersistError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PersistError>>,
{
    let mut wait = Duration::from_millis(10);
    for _ in 0..4 {
        match op().await {
            Err(PersistError::Contention(e)) => {
                if Instant::now() + wait >= deadline || ctx.shutdown.is_cancelled() {
                    return Err(PersistError::Contention(e));
                }
                debug!(error = %e, retry_in = ?wait, "database contention; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    op().await
}

/// Settles a delivery exactly once: the only place that acks or nacks.
pub async fn settle(
    ctx: &Context,
    session: &SessionHandle,
    lane: Lane,
    delivery: Delivery,
    fate: Fate,
) {
    let stats = &ctx.stats;
    let s = &ctx.settings.amqp;
    let queue = s.queue_of(lane);
    match fate {
        Fate::Done(stored) => {
            // Sent by the session's ack task, in delivery order (see `acks`).
            session.acks.ack(&delivery.acker, delivery.delivery_tag);
            match stored {
                Stored::Created(pipeline::deidentify::Status::Accepted) => {
                    stats.accepted.fetch_add(1, Relaxed)
                }
                Stored::Created(pipeline::deidentify::Status::Queried) => {
                    stats.queried.fetch_add(1, Relaxed)
                }
                Stored::Duplicate { .. } | Stored::Conflict => {
                    stats.duplicate.fetch_add(1, Relaxed)
                }
            };
            debug!(outcome = ?stored, "stored");
        }
        Fate::DeadLetter { rejected, attempts } => {
            let info = DeadLetterInfo {
                rejected: &rejected,
                attempts: i64::from(attempts),
                consumer: &ctx.consumer_name,
            };
            let published = session
                .op(
                    "dead letter",
                    amqp::publish_dead_letter(
                        &session.publisher,
                        &s.dead_letter_exchange,
                        queue,
                        &delivery.data,
                        &delivery.properties,
                        &info,
                    ),
                )
                .await;
            match published {
                Ok(()) => {
                    session.acks.ack_now(&delivery.acker, delivery.delivery_tag);
                    stats.dead_lettered(rejected.kind);
                    info!(kind = %rejected.kind, reason = %rejected.reason, record_id = ?rejected.record_id, "dead-lettered");
                }
                Err(e) => {
                    warn!(error = %e, kind = %rejected.kind, "dead letter not confirmed; giving the message back");
                    requeue(ctx, session, delivery).await;
                }
            }
        }
        Fate::Retry { failed, reason } => {
            let delay = ctx.settings.retry.delay_after(failed);
            let published = session
                .op(
                    "delayed retry",
                    amqp::publish_retry(
                        &session.publisher,
                        &amqp::retry_queue(queue, delay),
                        &delivery.data,
                        &delivery.properties,
                        failed,
                        &reason,
                    ),
                )
                .await;
            match published {
                Ok(()) => {
                    session.acks.ack_now(&delivery.acker, delivery.delivery_tag);
                    stats.retried.fetch_add(1, Relaxed);
                    warn!(%reason, attempt = failed, retry_in = ?delay, "failed; retrying later through the delay queue");
                }
                Err(e) => {
                    warn!(error = %e, "delayed retry not confirmed; giving the message back");
                    requeue(ctx, session, delivery).await;
                }
            }
        }
        Fate::Postpone(reason) => {
            let delay = ctx.settings.retry.initial_delay;
            let published = session
                .op(
                    "postponing",
                    amqp::publish_to(
                        &session.publisher,
                        "",
                        &amqp::retry_queue(queue, delay),
                        &delivery.data,
                        delivery.properties.clone(),
                    ),
                )
                .await;
            match published {
                Ok(()) => {
                    session.acks.ack_now(&delivery.acker, delivery.delivery_tag);
                    stats.postponed.fetch_add(1, Relaxed);
                    debug!(%reason, retry_in = ?delay, "postponed");
                }
                Err(e) => {
                    debug!(%reason, error = %e, "could not postpone; giving the message back");
                    requeue(ctx, session, delivery).await;
                }
            }
        }
    }
}

pub async fn requeue(ctx: &Context, session: &SessionHandle, delivery: Delivery) {
    ctx.stats
        .requeued
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    session.acks.requeue(&delivery.acker, delivery.delivery_tag);
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
