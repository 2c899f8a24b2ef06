//! One delivery as the rest of the daemon sees it, read once when it arrives; and the hand-over
//! point between the broker side and the workers.
//!
//! ```text
//!  urgent lane pump --Intake--> [urgent slot, 1]          --Feed--> worker: one urgent delivery,
//!  normal lane pump --Intake--> [normal slots, batch_size] --Feed-->   else up to batch_size normal
//! ```
//! An [`Inbound`] carries what the workers need (the body, its hash, its id, whether it was delivered
//! before, where to answer, how many attempts failed, who uploaded it) and, privately, what settling
//! it needs (its delivery tag and the session it came from). Only [`super::settle`] can settle it.
//!
//! Every property and header is the uploader's choice, so each is read here once, without trusting
//! it: no value can panic a conversion, and no value PostgreSQL cannot store (text and jsonb refuse
//! U+0000) goes on towards the database (see [`Inbound::unstorable`] and [`reply_fault`]).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use lapin::message::Delivery;
use lapin::{Acker, BasicProperties, Channel};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::acks::Acks;
use super::publish::{Bound, Original, Seal};
use super::trace::TraceContext;
use crate::lane::Lane;
use crate::printable::Printable;
use crate::stats::{Held, Stats};
use crate::store::ingest::Reply;

mod batch;
mod properties;
pub use batch::{BatchRefused, H_BATCH_ID, H_BATCH_SIZE, UploadBatch, upload_batch};
#[doc(hidden)]
pub use properties::published_at;
pub use properties::{NUL_MESSAGE_ID, reply_fault, storable};

/// A delivery, as the workers see it.
pub struct Inbound {
    pub lane: Lane,
    pub body: Vec<u8>,
    /// The original properties, kept for the copies we publish (dead letter, delay queue).
    pub properties: BasicProperties,
    /// The AMQP `message_id`; none if it holds a character PostgreSQL cannot store (the message is
    /// then refused: see [`Inbound::unstorable`]).
    pub message_id: Option<String>,
    pub body_sha256: String,
    /// The broker delivered it before (a requeue, a lost channel, a crash of a consumer).
    pub redelivered: bool,
    /// Where its outcome is answered, if the uploader asked.
    pub reply: Option<Reply>,
    /// The uploader's trace context, if well-formed.
    pub trace: TraceContext,
    /// Attempts that already failed, from our own sealed header on a message back from a delay
    /// queue (a count an uploader set is not believed).
    pub failed_attempts: u32,
    /// Who uploaded it: the AMQP `user_id` of the delivery (RabbitMQ refuses one that is not the
    /// publishing connection's user), or on a copy back from our delay queue, our sealed
    /// `x-edc-uploaded-by` (never an unsealed one). None if the uploader set no `user_id`.
    pub uploaded_by: Option<String>,
    /// Why its properties cannot be stored, if they cannot: the message is refused as `invalid`.
    pub unstorable: Option<&'static str>,
    /// The job's span: the message id and delivery tag now, the record id once it is known.
    pub span: tracing::Span,
    /// When it was published, if its publisher or the broker stamped it (see
    /// `properties::published_at`).
    pub published_at: Option<SystemTime>,
    /// Counted in `edc_deliveries_in_flight` until it is settled (dropped).
    _in_flight: Held,
    pub(super) tag: u64,
    pub(super) acker: Acker,
    pub(super) link: Arc<Link>,
}

impl Inbound {
    pub(super) fn new(delivery: Delivery, lane: Lane, link: Arc<Link>) -> Inbound {
        let Delivery {
            delivery_tag,
            redelivered,
            properties,
            data,
            acker,
            ..
        } = delivery;
        let raw_id = properties.message_id().as_ref().map(|m| m.as_str());
        let unstorable = raw_id
            .is_some_and(|id| !storable(id))
            .then_some(NUL_MESSAGE_ID);
        let message_id = raw_id.filter(|id| storable(id)).map(str::to_string);
        let reply = properties
            .reply_to()
            .as_ref()
            .map(|r| r.as_str())
            .filter(|r| !r.is_empty())
            .map(|to| Reply {
                to: to.to_string(),
                correlation_id: properties.correlation_id().as_ref().map(|c| c.to_string()),
            });
        let body_sha256 = crate::pipeline::sha256_hex(&data);
        let trace = TraceContext::of(&properties);
        let span = tracing::info_span!(
            "job",
            message_id = %Printable(raw_id.unwrap_or("-")),
            tag = delivery_tag,
            lane = lane.as_str(),
            record_id = tracing::field::Empty,
            version = tracing::field::Empty,
        );
        if let Some(parent) = &trace.traceparent {
            crate::telemetry::set_remote_parent(&span, parent, trace.tracestate.as_deref());
        }
        let bound = Bound {
            body_sha256: &body_sha256,
            message_id: message_id.as_deref(),
        };
        let ours = link.seal.open(&properties, bound);
        let uploaded_by = match properties.user_id() {
            Some(user) => Some(user.as_str()),
            None => ours.uploaded_by(),
        }
        .filter(|u| storable(u))
        .map(str::to_string);
        Inbound {
            lane,
            published_at: published_at(&properties, SystemTime::now()),
            _in_flight: link.stats.in_flight(lane),
            failed_attempts: ours.failed_attempts(),
            uploaded_by,
            unstorable,
            body_sha256,
            body: data,
            properties,
            message_id,
            redelivered,
            reply,
            trace,
            span,
            tag: delivery_tag,
            acker,
            link,
        }
    }

    /// What a copy of this delivery is made of (see `publish::Original`).
    pub(super) fn original<'a>(&'a self, seal: &'a Seal) -> Original<'a> {
        Original {
            body: &self.body,
            properties: &self.properties,
            message: Bound {
                body_sha256: &self.body_sha256,
                message_id: self.message_id.as_deref(),
            },
            uploaded_by: self.uploaded_by.as_deref(),
            trace: self.onward_trace(),
            seal,
        }
    }

    /// The trace context what is published for this delivery carries (see `TraceContext::onward`).
    pub fn onward_trace(&self) -> TraceContext {
        self.trace.onward(&self.span)
    }
}

/// What a delivery keeps of the session it came from, to be settled on it.
pub struct Link {
    /// Confirm-mode channel for dead letters, delayed retries and postponed messages.
    pub(super) publisher: Channel,
    /// `amqp.operation_timeout`: the longest one publish-and-confirm, ack or nack may take.
    pub(super) operation_timeout: Duration,
    /// Cancelled when the session is gone: by the supervisor when it loses the session, by an
    /// operation that overran `operation_timeout`, or when the broker closed one of its channels or
    /// a copy was unroutable ([`Link::break_session`]); the supervisor then drops the session and
    /// connects again. An operation on a broken session gives up at once: lapin can leave an ack
    /// issued as the connection dies waiting for ever, and a worker stuck there would hold the
    /// isolation lock that every redelivered message needs.
    pub(super) broken: CancellationToken,
    /// Why the session was broken, when it was by [`Link::break_session`].
    why_broken: OnceLock<String>,
    /// The channel's acks and nacks, in order and coalesced; and the count of each lane's
    /// deliveries handed to the workers and not yet acked.
    pub(super) acks: Acks,
    /// Opens our sealed headers on a message back from a delay queue.
    pub(super) seal: Seal,
    /// Where its deliveries are counted while in flight.
    pub(super) stats: Arc<Stats>,
}

impl Link {
    pub(super) fn new(
        publisher: Channel,
        operation_timeout: Duration,
        stats: Arc<Stats>,
        seal: Seal,
    ) -> Link {
        let broken = CancellationToken::new();
        Link {
            publisher,
            operation_timeout,
            acks: Acks::start(broken.clone(), operation_timeout, stats.clone()),
            broken,
            why_broken: OnceLock::new(),
            seal,
            stats,
        }
    }

    /// Breaks the session: every operation on it gives up at once, and the supervisor replaces it
    /// (a new connection, the topology declared again). The first reason given is kept.
    pub(super) fn break_session(&self, why: impl Into<String>) {
        let _ = self.why_broken.set(why.into());
        self.broken.cancel();
    }

    /// Why the session was broken.
    pub(super) fn why_broken(&self) -> &str {
        self.why_broken
            .get()
            .map_or("a broker operation overran amqp.operation_timeout", |s| s)
    }
}

/// The broker side of the hand-over: the lanes' slots.
pub struct Intake {
    pub(super) urgent: mpsc::Sender<Inbound>,
    pub(super) normal: mpsc::Sender<Inbound>,
}

/// The workers' side of the hand-over.
#[derive(Clone)]
pub struct Feed {
    urgent: Arc<Mutex<mpsc::Receiver<Inbound>>>,
    normal: Arc<Mutex<mpsc::Receiver<Inbound>>>,
    batch_size: usize,
}

/// The slots between the lanes and the workers: one for the urgent lane, `batch_size` for the
/// normal lane, so that a worker's group gathers without waiting.
pub fn feed(batch_size: usize) -> (Intake, Feed) {
    let (urgent, urgent_rx) = mpsc::channel(1);
    let (normal, normal_rx) = mpsc::channel(batch_size.max(1));
    (
        Intake { urgent, normal },
        Feed {
            urgent: Arc::new(Mutex::new(urgent_rx)),
            normal: Arc::new(Mutex::new(normal_rx)),
            batch_size: batch_size.max(1),
        },
    )
}

impl Feed {
    /// A worker's next work: one urgent delivery if there is one, else the next normal delivery
    /// and whatever else of its lane is already waiting, up to `batch_size`. None once the intake is
    /// closed and drained, or at `shutdown`.
    ///
    /// A lock is held only while waiting for and taking deliveries, and a group is gathered under
    /// the lock it was received with: a worker never holds a delivery while it waits for a lock
    /// another idle worker holds.
    pub async fn next(&self, shutdown: &CancellationToken) -> Option<Vec<Inbound>> {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => None,
            one = async { self.urgent.lock().await.recv().await } => match one {
                Some(d) => Some(vec![d]),
                None => self.next_normal().await,
            },
            group = self.next_normal() => group,
        }
    }

    async fn next_normal(&self) -> Option<Vec<Inbound>> {
        let mut rx = self.normal.lock().await;
        let first = rx.recv().await?;
        let mut group = Vec::with_capacity(self.batch_size);
        group.push(first);
        while group.len() < self.batch_size {
            match rx.try_recv() {
                Ok(d) => group.push(d),
                Err(_) => break,
            }
        }
        Some(group)
    }

    /// The deliveries handed over that no worker took (once the workers have stopped).
    pub async fn leftovers(&self) -> Vec<Inbound> {
        let mut out = Vec::new();
        for slots in [&self.urgent, &self.normal] {
            let mut rx = slots.lock().await;
            while let Ok(d) = rx.try_recv() {
                out.push(d);
            }
        }
        out
    }
}
