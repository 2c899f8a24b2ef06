//! Settling a delivery: the only code that acks, nacks or publishes a copy of a delivery.
//!
//! ```text
//! Fate::Done        committed, or recognised as already committed     -> ack (in order, coalesced)
//! Fate::DeadLetter  rejections row committed -> dead letter (confirmed) -> ack at once
//! Fate::Retry       park in the delay queue for attempt n+1 (confirmed) -> ack at once
//! Fate::Postpone    back through the first delay queue (confirmed)      -> ack at once
//! give_back         never started (shutdown, a database pause)          -> nack, requeue
//! ```
//! An ack is decided only after COMMIT returned, or after the broker confirmed the copy. A copy that
//! is not confirmed gives the delivery back instead. A delivery whose copy went out is acked at once,
//! not held for a `multiple` ack: a redelivery after a crash would make a second copy. Acks are sent
//! by the session's ack task ([`super::acks`]).
//!
//! Every copy is made by `publish::Original::copy`: never the uploader's `user_id`, `expiration`,
//! `x-edc-*` headers or `x-delivery-count`; our headers sealed. A copy that failed because the
//! publisher channel is closed (a 406, a 404: the broker closes a channel on any refusal) or because
//! it was unroutable (a queue of our topology is gone) breaks the session: the supervisor connects
//! again and declares the topology again, instead of every later copy failing on a dead channel.

use std::sync::Arc;

use tracing::{Instrument, debug, info, warn};

use super::inbound::Inbound;
use super::publish::{self, DeadLetterInfo, Seal, UNROUTABLE};
use super::topology::retry_queue;
use super::{BrokerError, in_session};
use crate::config::{AmqpSettings, RetrySettings};
use crate::pipeline::Rejected;
use crate::pipeline::deidentify::Status;
use crate::printable::Printable;
use crate::stats::Stats;
use crate::store::Stored;

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

impl Fate {
    /// Settled for good: acked, never to come back (unless the ack is lost with its session).
    pub fn is_final(&self) -> bool {
        !matches!(self, Fate::Postpone(_))
    }
}

/// Settles deliveries; one per daemon, shared by the workers and the supervisor.
pub struct Settler {
    /// Seals our headers on every copy (see `publish::seal`).
    pub(super) seal: Seal,
    amqp: AmqpSettings,
    retry: RetrySettings,
    /// `host:pid`, written into dead letters.
    consumer: String,
    stats: Arc<Stats>,
}

impl Settler {
    pub fn new(
        amqp: AmqpSettings,
        retry: RetrySettings,
        consumer: String,
        stats: Arc<Stats>,
        seal: Seal,
    ) -> Settler {
        Settler {
            seal,
            amqp,
            retry,
            consumer,
            stats,
        }
    }

    /// Settles a delivery exactly once (it is consumed).
    pub async fn settle(&self, d: Inbound, fate: Fate) {
        let span = d.span.clone();
        self.settle_in_span(d, fate).instrument(span).await
    }

    async fn settle_in_span(&self, d: Inbound, fate: Fate) {
        let queue = self.amqp.queue_of(d.lane);
        let stats = &self.stats;
        match fate {
            Fate::Done(stored) => {
                // Sent by the session's ack task, in delivery order (see `acks`).
                d.link.acks.ack(&d.acker, d.tag);
                let counter = match stored {
                    Stored::Created(Status::Accepted) => &stats.accepted,
                    Stored::Created(Status::Queried) => &stats.queried,
                    Stored::Duplicate { .. } | Stored::Conflict => &stats.duplicate,
                };
                counter.inc();
                if let Stored::Created(_) = stored {
                    stats.committed(d.published_at);
                }
                debug!(outcome = ?stored, "stored");
            }
            Fate::DeadLetter { rejected, attempts } => {
                let info = DeadLetterInfo {
                    rejected: &rejected,
                    attempts: i64::from(attempts),
                    consumer: &self.consumer,
                    ttl: self.amqp.dead_letter_ttl,
                };
                let original = d.original(&self.seal);
                let copy = publish::publish_dead_letter(
                    &d.link.publisher,
                    &self.amqp.dead_letter_exchange,
                    queue,
                    &original,
                    &info,
                );
                match self.op(&d, "dead letter", copy).await {
                    Ok(()) => {
                        d.link.acks.ack_now(&d.acker, d.tag);
                        stats.dead_lettered(rejected.kind);
                        info!(kind = %rejected.kind, reason = %rejected.reason,
                              record_id = ?rejected.record_id, "dead-lettered");
                    }
                    Err(e) => {
                        warn!(error = %e, kind = %rejected.kind, "dead letter not confirmed; giving the message back");
                        self.give_back(d);
                    }
                }
            }
            Fate::Retry { failed, reason } => {
                let delay = self.retry.delay_after(failed);
                let delay_queue = retry_queue(queue, delay);
                let original = d.original(&self.seal);
                let copy = publish::publish_retry(
                    &d.link.publisher,
                    &delay_queue,
                    &original,
                    failed,
                    &reason,
                );
                match self.op(&d, "delayed retry", copy).await {
                    Ok(()) => {
                        d.link.acks.ack_now(&d.acker, d.tag);
                        stats.retried.inc();
                        warn!(%reason, attempt = failed, retry_in = ?delay, "failed; retrying later through the delay queue");
                    }
                    Err(e) => {
                        warn!(error = %e, "delayed retry not confirmed; giving the message back");
                        self.give_back(d);
                    }
                }
            }
            Fate::Postpone(reason) => {
                let delay = self.retry.initial_delay;
                let delay_queue = retry_queue(queue, delay);
                let original = d.original(&self.seal);
                let copy = publish::publish_postponed(
                    &d.link.publisher,
                    &delay_queue,
                    &original,
                    d.failed_attempts,
                );
                match self.op(&d, "postponing", copy).await {
                    Ok(()) => {
                        d.link.acks.ack_now(&d.acker, d.tag);
                        stats.postponed.inc();
                        debug!(%reason, retry_in = ?delay, "postponed");
                    }
                    Err(e) => {
                        debug!(%reason, error = %e, "could not postpone; giving the message back");
                        self.give_back(d);
                    }
                }
            }
        }
    }

    /// Gives a delivery back to its queue unstarted (nack with requeue). The broker delivers it
    /// again, to this daemon or another.
    pub fn give_back(&self, d: Inbound) {
        self.stats.requeued.inc();
        debug!(parent: &d.span, message_id = %Printable(d.message_id.as_deref().unwrap_or("-")), "given back");
        d.link.acks.requeue(&d.acker, d.tag);
    }

    /// One copy of the delivery, published on its session within `amqp.operation_timeout`. A copy
    /// that failed on a closed publisher channel, or unroutable, breaks the session.
    async fn op(
        &self,
        d: &Inbound,
        what: &str,
        op: impl Future<Output = Result<(), BrokerError>>,
    ) -> Result<(), BrokerError> {
        let result = in_session(&d.link.broken, d.link.operation_timeout, what, op).await;
        if let Err(e) = &result {
            if !d.link.publisher.status().connected() {
                d.link
                    .break_session(format!("the publisher channel is closed ({what}: {e})"));
            } else if matches!(e, BrokerError::Refused(why) if *why == UNROUTABLE) {
                d.link.break_session(format!(
                    "{what} was unroutable: the topology is declared again"
                ));
            }
        }
        result
    }
}
