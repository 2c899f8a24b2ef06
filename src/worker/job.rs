//! One job: a group of deliveries in (one, or up to `batch_size` already waiting), exactly one
//! settlement out for each. A single delivery goes the same way as a group.
//!
//! ```text
//! group ─ gate closed? ───────────────────────────────────────────────────────────────> Postpone
//!   │ redelivered? that one runs alone, its start counted; past crash_limit ────────> DeadLetter poison
//!   v
//! prepare each (parse, validate, de-identify; pure) ─ refused or panicked ─> rejections row ─> DeadLetter
//!   v
//! committer: the group's records, with whatever else is ready, in ONE transaction
//!   v
//! fate of each (see `fate`) ──> Settler::settle: ack after COMMIT | dead letter then ack | ...
//!   then each record whose key was busy (another session storing it): stored alone, waiting for
//!   that session ──> its fate ──> settled
//! ```
//!
//! Busy keys: a record whose key another session is storing at that moment comes back from the
//! committer unwritten. The rest of the group is settled first; then each such record is stored
//! alone on a statement that waits for the other session, so the wait costs that record only.
//!
//! Crash loops: a message the broker delivers again (after a crash, a lost channel, a requeue) runs
//! alone, holding the isolation lock exclusively, after its start is counted in the crash count
//! ([`crate::store::crash`]). If such a message kills the process, nothing else was running beside
//! it, so no innocent message is blamed; after `crash_limit` counted starts it is dead-lettered as
//! `poison` without running again.
//!
//! Deadline: a job that runs past `job_timeout` (the database hangs) closes the database gate and
//! postpones its deliveries; it never holds a delivery near RabbitMQ's `consumer_timeout`.

use std::panic::AssertUnwindSafe;
use std::slice;

use tokio::time::Instant;
use tracing::Instrument;

use super::Context;
use super::fate::{self, panic_reason, reject, unavailable, with_attempts};
use super::odm;
use crate::broker::inbound::reply_fault;
use crate::broker::{Fate, Inbound};
use crate::pipeline::{self, Deidentified, RejectKind, Rejected};
use crate::printable::Printable;
use crate::protocol::Registry;
use crate::store::ingest::{Attempt, Pending};
use crate::store::{PersistError, crash, with_retries};

/// Runs a group of deliveries to their settlement.
pub async fn run(ctx: &Context, mut group: Vec<Inbound>) {
    for d in &mut group {
        screen_reply(ctx, d);
    }
    let (again, fresh): (Vec<_>, Vec<_>) = group.into_iter().partition(|d| d.redelivered);
    for d in again {
        alone(ctx, d).await;
    }
    let (xml, fresh): (Vec<_>, Vec<_>) = fresh.into_iter().partition(odm::is_odm);
    for d in xml {
        odm::shared(ctx, d).await;
    }
    if !fresh.is_empty() {
        shared(ctx, fresh).await;
    }
}

/// A `reply_to` that is not an allowed reply address (see `amqp.reply_to_allowed`), or an answer
/// that cannot be sent or stored (see `inbound::reply_fault`), gets no answer; the record itself is
/// handled as any other.
fn screen_reply(ctx: &Context, d: &mut Inbound) {
    let Some(reply) = &d.reply else { return };
    let why = match reply_fault(reply) {
        Some(fault) => fault,
        None if ctx.settings.amqp.reply_allowed(&reply.to) => return,
        None => "reply_to is not an allowed reply address (amqp.reply_to_allowed)",
    };
    tracing::warn!(parent: &d.span, reply_to = %Printable(&reply.to), reason = why,
        "no answer is sent");
    ctx.stats.reply_to_refused.inc();
    d.reply = None;
}

/// What became of a delivery in its group: its fate, or a record to store again alone (its key
/// was busy).
enum Decided {
    Fate(Fate),
    Busy(Box<Pending>),
}

/// Deliveries seen for the first time: side by side with the other workers' jobs.
async fn shared(ctx: &Context, group: Vec<Inbound>) {
    let _shared = ctx.isolation.read().await;
    if !ctx.gate.is_open() {
        for d in group {
            ctx.settler
                .settle(d, Fate::Postpone("database unavailable".into()))
                .await;
        }
        return;
    }
    let deadline = Instant::now() + ctx.settings.job_timeout;
    let decided = decide_within(ctx, &group, deadline).await;
    let mut busy = Vec::new();
    for (d, decided) in group.into_iter().zip(decided) {
        match decided {
            Decided::Fate(fate) => ctx.settler.settle(d, fate).await,
            Decided::Busy(p) => busy.push((d, p)),
        }
    }
    for (d, p) in busy {
        let fate = busy_alone(ctx, &d, *p, deadline).await;
        ctx.settler.settle(d, fate).await;
    }
}

/// A delivery the broker delivered before: alone, after its start is counted.
async fn alone(ctx: &Context, d: Inbound) {
    let _alone = ctx.isolation.write().await;
    let key = crash::key(&d.body_sha256, d.message_id.as_deref());
    let fate = if !ctx.gate.is_open() {
        Fate::Postpone("database unavailable".into())
    } else {
        let deadline = Instant::now() + ctx.settings.job_timeout;
        let counted = with_retries(deadline, || async {
            let client = ctx.share.get().await?;
            crash::count_start(&client, &key, &ctx.instance).await
        })
        .instrument(d.span.clone())
        .await;
        match counted {
            Ok(n) if u32::try_from(n).unwrap_or(u32::MAX) >= ctx.settings.crash_limit => {
                let reason = format!(
                    "the process died {n} times while handling this message; it is not run again"
                );
                let poison = Rejected::new(RejectKind::Poison, reason)
                    .hinted(&d.body, ctx.settings.max_message_bytes);
                let fate = reject(ctx, &d, poison, deadline)
                    .instrument(d.span.clone())
                    .await;
                with_attempts(fate, u32::try_from(n).unwrap_or(u32::MAX))
            }
            Ok(_) if odm::is_odm(&d) => odm::decide_within(ctx, &d, deadline).await,
            Ok(_) => match decide_within(ctx, slice::from_ref(&d), deadline)
                .await
                .pop()
            {
                Some(Decided::Fate(fate)) => fate,
                Some(Decided::Busy(p)) => busy_alone(ctx, &d, *p, deadline).await,
                None => Fate::Postpone("no outcome decided".into()),
            },
            Err(e) => unavailable(ctx, e),
        }
    };
    let settled_for_good = fate.is_final();
    ctx.settler.settle(d, fate).await;
    if settled_for_good {
        // Best effort: a row left behind only matters if this message crashes us again.
        if let Ok(client) = ctx.share.get().await {
            let _ = crash::forget(&client, &key).await;
        }
    }
}

/// [`decide`] by `deadline`; past it the database gate closes and the group is postponed.
async fn decide_within(ctx: &Context, group: &[Inbound], deadline: Instant) -> Vec<Decided> {
    match tokio::time::timeout_at(deadline, decide(ctx, group, deadline)).await {
        Ok(decided) => decided,
        Err(_) => {
            ctx.gate.close("a job ran past its deadline");
            let why = format!("job deadline of {:?} passed", ctx.settings.job_timeout);
            group
                .iter()
                .map(|_| Decided::Fate(Fate::Postpone(why.clone())))
                .collect()
        }
    }
}

/// A record whose key was busy, stored alone: its statement waits for the session storing the same
/// key (see `Committer::alone`). By `deadline`; a wait past it is contention, retried later
/// through a delay queue (the database answers: this one key stays locked).
async fn busy_alone(ctx: &Context, d: &Inbound, p: Pending, deadline: Instant) -> Fate {
    let stored = tokio::time::timeout_at(deadline, ctx.committer.alone(&p, deadline))
        .instrument(d.span.clone())
        .await
        .unwrap_or_else(|_| {
            Err(PersistError::Contention(
                "its key stayed locked by another session past the job deadline".into(),
            ))
        });
    fate::of_store(ctx, d, p, stored, deadline)
        .instrument(d.span.clone())
        .await
}

/// What became of each delivery of a group, in order: each is prepared; the records go to the
/// committer together; what each came to decides its fate, unless its key was busy.
async fn decide(ctx: &Context, group: &[Inbound], deadline: Instant) -> Vec<Decided> {
    let mut fates: Vec<Option<Decided>> = group.iter().map(|_| None).collect();
    let mut ready: Vec<(usize, Pending)> = Vec::with_capacity(group.len());
    let mut refused: Vec<(usize, Rejected)> = Vec::new();
    {
        let registry = ctx.registry();
        for (i, d) in group.iter().enumerate() {
            match prepare(ctx, &registry, d) {
                Ok(record) => ready.push((i, pending(d, record))),
                Err(rejected) => refused.push((i, rejected)),
            }
        }
    }
    for (i, rejected) in refused {
        let d = &group[i];
        let fate = reject(ctx, d, rejected, deadline).instrument(d.span.clone());
        fates[i] = Some(Decided::Fate(fate.await));
    }
    if !ready.is_empty() {
        let (at, items): (Vec<usize>, Vec<Pending>) = ready.into_iter().unzip();
        let outcomes = ctx.committer.commit(group[0].lane, items, deadline).await;
        for (i, (p, attempt)) in at.into_iter().zip(outcomes) {
            let d = &group[i];
            let stored = match attempt {
                Ok(Attempt::Busy) => {
                    tracing::debug!(parent: &d.span, "its key is being stored by another session; storing it alone");
                    fates[i] = Some(Decided::Busy(Box::new(p)));
                    continue;
                }
                Ok(Attempt::Done(stored)) => Ok(stored),
                Err(e) => Err(e),
            };
            let fate = fate::of_store(ctx, d, p, stored, deadline).instrument(d.span.clone());
            fates[i] = Some(Decided::Fate(fate.await));
        }
    }
    fates
        .into_iter()
        .map(|f| f.unwrap_or_else(|| Decided::Fate(Fate::Postpone("no outcome decided".into()))))
        .collect()
}

/// The pure part: the body to a de-identified record, or a refusal. A panic is caught here and
/// becomes the delivery's own refusal, so its worker lives on and nothing else is blamed. A message
/// whose properties cannot be stored is refused before its body is read.
fn prepare(ctx: &Context, registry: &Registry, d: &Inbound) -> Result<Deidentified, Rejected> {
    let _in_job = d.span.enter();
    if let Some(why) = refused_properties(ctx, d) {
        return Err(
            Rejected::new(RejectKind::Invalid, why).hinted(&d.body, ctx.settings.max_message_bytes)
        );
    }
    let run = || {
        #[cfg(feature = "fault-injection")]
        crate::fault::inject(&d.body);
        pipeline::prepare(
            &d.body,
            ctx.settings.max_message_bytes,
            registry,
            &ctx.pseudonymizer,
        )
    };
    match std::panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(record)) => {
            d.span
                .record("record_id", tracing::field::display(record.record_id));
            d.span.record("version", record.version);
            Ok(record)
        }
        Ok(Err(rejected)) => Err(rejected),
        Err(panic) => Err(
            Rejected::new(RejectKind::Panic, panic_reason(&*panic, &d.body))
                .hinted(&d.body, ctx.settings.max_message_bytes),
        ),
    }
}

/// Why a delivery is refused (`invalid`) before its body is read: a property PostgreSQL cannot
/// store, or no AMQP `user_id` where `amqp.require_user_id` asks for one.
pub(super) fn refused_properties(ctx: &Context, d: &Inbound) -> Option<&'static str> {
    if let Some(why) = d.unstorable {
        return Some(why);
    }
    (ctx.settings.amqp.require_user_id && d.uploaded_by.is_none()).then_some(
        "the message has no AMQP user_id, and amqp.require_user_id asks for the uploader \
         RabbitMQ authenticated",
    )
}

fn pending(d: &Inbound, record: Deidentified) -> Pending {
    Pending {
        record,
        message_id: d.message_id.clone(),
        payload_sha256: d.body_sha256.clone(),
        reply: d.reply.clone(),
        event_headers: d.onward_trace().as_headers(),
        uploaded_by: d.uploaded_by.clone(),
        odm: None,
    }
}
