//! The consuming side: a supervisor that keeps one AMQP session alive, and the fixed worker set.
//!
//! ```text
//!  supervisor: connect (fail-over, backoff + jitter) -> declare -> two consumers on one channel:
//!     urgent lane  (edc.records.urgent, prefetch 1)          --> urgent slot (1 job)  --+
//!     normal lane  (edc.records, prefetch = the rest)         --> normal slots         --+--> workers
//!  workers (N tasks): take urgent work first, else normal work (a batch of it when batch_size > 1)
//! ```
//!
//! Flow control: the two consumers' prefetch add up to `workers x batch_size` (with one worker, the
//! urgent lane adds its one delivery on top), so that many deliveries at most are unacked and nothing
//! piles up in memory whatever the backlog. RabbitMQ 3.10 quorum queues have no priorities, so the
//! fast lane is its own queue: an urgent record is delivered at once into its own slot and the next
//! free worker takes it before any normal work.
//!
//! A job remembers the session it came from; if that session dies, its ack fails harmlessly: the data
//! committed, and the redelivery is recognised as a duplicate.
//!
//! Pause: while the database gate is closed both consumers are cancelled and what was delivered but
//! not started is given back; they resume when the gate opens.
//! Shutdown: cancel the consumers (basic.cancel), give back what was delivered but not started, let
//! the workers finish their jobs within `shutdown_grace`, then close the connection.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use rand::Rng;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::amqp;
use crate::app::Context;
use crate::worker::{self, SessionHandle};

/// Which queue a delivery came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    Urgent = 0,
    Normal = 1,
}

struct Job {
    delivery: Delivery,
    session: Arc<SessionHandle>,
}

type Slots = Arc<Mutex<mpsc::Receiver<Job>>>;

struct Session {
    connection: Connection,
    channel: Channel,
    handle: Arc<SessionHandle>,
    urgent: lapin::Consumer,
    normal: lapin::Consumer,
    tags: Vec<String>,
    base_tag: String,
    /// Consumer pairs started on this channel so far (one more after each database pause).
    generation: u32,
}

enum End {
    Shutdown,
    Paused,
    Lost(String),
}

/// Runs until shutdown. Returns when every worker has finished (or the grace period ran out) and the
/// broker connection is closed.
pub async fn run(ctx: Arc<Context>) {
    let (urgent_tx, urgent_rx) = mpsc::channel::<Job>(1);
    // One slot per record a worker may take at once: a worker's batch gathers without waiting.
    let (normal_tx, normal_rx) = mpsc::channel::<Job>(ctx.settings.batch_size);
    let (urgent_rx, normal_rx): (Slots, Slots) = (
        Arc::new(Mutex::new(urgent_rx)),
        Arc::new(Mutex::new(normal_rx)),
    );
    let mut workers = JoinSet::new();
    for _ in 0..ctx.settings.workers {
        workers.spawn(worker_loop(
            ctx.clone(),
            urgent_rx.clone(),
            normal_rx.clone(),
        ));
    }

    let mut node = 0;
    let mut sessions = 0u64;
    let mut wait = ctx.settings.amqp.reconnect_initial;
    let mut last: Option<Session> = None;
    while !ctx.shutdown.is_cancelled() {
        sessions += 1;
        let mut session = match open_session(&ctx, node, sessions).await {
            Ok((s, idx)) => {
                node = idx;
                wait = ctx.settings.amqp.reconnect_initial;
                s
            }
            Err(e) => {
                let jittered = jitter(wait);
                warn!(error = %e, retry_in = ?jittered, "cannot reach RabbitMQ; retrying");
                node += 1;
                tokio::select! {
                    _ = tokio::time::sleep(jittered) => {}
                    _ = ctx.shutdown.cancelled() => break,
                }
                wait = (wait * 2).min(ctx.settings.amqp.reconnect_max);
                continue;
            }
        };
        info!(tags = ?session.tags, prefetch = ctx.settings.prefetch(), queue = %ctx.settings.amqp.queue,
              urgent_queue = %ctx.settings.amqp.urgent_queue, "consuming");
        match run_session(&ctx, &mut session, &urgent_tx, &normal_tx).await {
            End::Shutdown | End::Paused => {
                last = Some(session);
                break;
            }
            End::Lost(e) => {
                warn!(error = %e, "lost the broker session; reconnecting");
                // Jobs of this session stop waiting on it: their messages come back anyway.
                session.handle.broken.cancel();
                close(&ctx, &session.connection, 320, "session lost").await;
            }
        }
    }

    // Stop intake first, then drain.
    if let Some(s) = &mut last {
        stop_consumers(&ctx, s).await;
    }
    drop((urgent_tx, normal_tx));
    let grace = ctx.settings.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            ?grace,
            "shutdown grace ran out; unfinished jobs return to the queue when the channel closes"
        );
        workers.abort_all();
    }
    // Jobs handed over but never started.
    for slots in [&urgent_rx, &normal_rx] {
        while let Ok(job) = slots.lock().await.try_recv() {
            worker::requeue(&ctx, &job.session, job.delivery).await;
        }
    }
    // Closing the connection closes its channels; anything still unacked returns to the queue. The
    // session (and so its channels) is dropped only after that, so no channel is half-closed first.
    if let Some(s) = last {
        s.handle.acks.flush().await;
        close(&ctx, &s.connection, 200, "shutdown").await;
    }
}

/// Pumps both lanes until the session ends; pauses and resumes them around database outages.
async fn run_session(
    ctx: &Context,
    session: &mut Session,
    urgent_tx: &mpsc::Sender<Job>,
    normal_tx: &mpsc::Sender<Job>,
) -> End {
    loop {
        let end = {
            let handle = session.handle.clone();
            tokio::select! {
                end = pump(ctx, Lane::Urgent, &mut session.urgent, urgent_tx, &handle, &session.channel) => end,
                end = pump(ctx, Lane::Normal, &mut session.normal, normal_tx, &handle, &session.channel) => end,
            }
        };
        match end {
            End::Paused => {
                if let Err(end) = pause(ctx, session).await {
                    return end;
                }
            }
            other => return other,
        }
    }
}

/// How long a lane may wait for deliveries, with a free slot, before it asks the broker whether its
/// queue is really empty.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// Moves one lane's deliveries into its slots until shutdown, a database pause, or the session dies.
/// A slot is reserved before a delivery is taken, so no delivery is ever held while waiting: the
/// future can be dropped at any await without losing one.
///
/// Liveness: a dead TCP connection may go unnoticed by a quiet consumer, so the connection is looked
/// at every second; and a consumer that gets nothing while its queue holds ready messages (a
/// half-dead connection, a queue that came back without our consumer) is a lost session too. That
/// is the "reconnected but stopped consuming" state other consumers end up in.
async fn pump(
    ctx: &Context,
    lane: Lane,
    consumer: &mut lapin::Consumer,
    slots: &mpsc::Sender<Job>,
    session: &Arc<SessionHandle>,
    channel: &Channel,
) -> End {
    let mut gate = ctx.gate.subscribe();
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    // Since when this lane has been waiting with a free slot and nothing arrived.
    let mut idle_since: Option<tokio::time::Instant> = None;
    let (urgent_prefetch, normal_prefetch) = lane_prefetch(ctx.settings.prefetch());
    let prefetch = usize::from(match lane {
        Lane::Urgent => urgent_prefetch,
        Lane::Normal => normal_prefetch,
    });
    loop {
        if !*gate.borrow_and_update() {
            return End::Paused;
        }
        let permit = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return End::Shutdown,
            _ = gate.changed() => continue,
            permit = slots.reserve() => match permit {
                Ok(p) => p,
                Err(_) => return End::Shutdown,
            },
        };
        let next = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return End::Shutdown,
            _ = gate.changed() => continue,
            _ = session.broken.cancelled() => {
                return End::Lost("a broker operation overran amqp.operation_timeout".into());
            }
            _ = watchdog.tick() => {
                if !channel.status().connected() {
                    return End::Lost("the broker connection is down".into());
                }
                // Only idle if the broker may send more: this lane's unacked deliveries are below
                // its prefetch (slow jobs that use it all up are not a stall).
                if session.acks.unacked(lane) >= prefetch {
                    idle_since = None;
                    continue;
                }
                let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= IDLE_CHECK {
                    if let Err(e) = ready_while_idle(ctx, lane, channel, since.elapsed()).await {
                        return End::Lost(e);
                    }
                    idle_since = None;
                }
                continue;
            }
            next = consumer.next() => next,
        };
        idle_since = None;
        match next {
            Some(Ok(delivery)) => {
                session.acks.taken(delivery.delivery_tag, lane);
                permit.send(Job {
                    delivery,
                    session: session.clone(),
                });
            }
            Some(Err(e)) => return End::Lost(e.to_string()),
            None => return End::Lost("the broker cancelled a consumer".into()),
        }
    }
}

/// Asks the broker how many messages are ready in the lane's queue; any at all, while this consumer
/// has had a free slot and received nothing for `idle`, means the session no longer consumes.
async fn ready_while_idle(
    ctx: &Context,
    lane: Lane,
    channel: &Channel,
    idle: Duration,
) -> Result<(), String> {
    let queue = ctx.settings.amqp.queue_of(lane);
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declare = channel.queue_declare(ShortString::from(queue), passive, FieldTable::default());
    let limit = ctx.settings.amqp.operation_timeout;
    let ready = amqp::within(limit, "checking the queue", declare)
        .await?
        .message_count();
    if ready > 0 {
        return Err(format!(
            "nothing delivered for {idle:.0?} with {ready} messages ready in {queue}"
        ));
    }
    Ok(())
}

/// The database is unavailable: cancel the consumers, give back what was delivered but not started,
/// wait for the gate to open, then consume again.
async fn pause(ctx: &Context, session: &mut Session) -> Result<(), End> {
    stop_consumers(ctx, session).await;
    let mut gate = ctx.gate.subscribe();
    tokio::select! {
        _ = ctx.shutdown.cancelled() => return Err(End::Shutdown),
        opened = gate.wait_for(|open| *open) => if opened.is_err() { return Err(End::Shutdown) },
    }
    session.generation += 1;
    match start_consumers(ctx, &session.channel, &session.base_tag, session.generation).await {
        Ok((urgent, normal, tags)) => {
            session.urgent = urgent;
            session.normal = normal;
            session.tags = tags;
            info!(tags = ?session.tags, "consuming again");
            Ok(())
        }
        Err(e) => Err(End::Lost(format!("resuming the consumers failed: {e}"))),
    }
}

/// basic.cancel both consumers, then give back the deliveries the broker already sent.
async fn stop_consumers(ctx: &Context, s: &mut Session) {
    for tag in &s.tags {
        let cancel = s.channel.basic_cancel(
            ShortString::from(tag.as_str()),
            BasicCancelOptions::default(),
        );
        let _ = amqp::within(ctx.settings.amqp.operation_timeout, "basic.cancel", cancel).await;
    }
    for consumer in [&mut s.urgent, &mut s.normal] {
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
        {
            worker::requeue(ctx, &s.handle, delivery).await;
        }
    }
}

/// Closes a connection, waiting at most `amqp.operation_timeout` for the broker's answer.
async fn close(ctx: &Context, connection: &Connection, code: u16, reason: &str) {
    amqp::close(
        connection,
        ctx.settings.amqp.operation_timeout,
        code,
        reason,
    )
    .await;
}

fn jitter(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.5..1.0);
    d.mul_f64(factor)
}

/// Prefetch of each lane: the urgent lane holds one delivery, the normal lane the rest.
pub fn lane_prefetch(ctx_prefetch: usize) -> (u16, u16) {
    let total = u16::try_from(ctx_prefetch).unwrap_or(u16::MAX);
    (1, total.saturating_sub(1).max(1))
}

/// Starts the two consumers; `basic.qos` before each sets that consumer's own prefetch.
async fn start_consumers(
    ctx: &Context,
    channel: &Channel,
    base_tag: &str,
    generation: u32,
) -> lapin::Result<(lapin::Consumer, lapin::Consumer, Vec<String>)> {
    let s = &ctx.settings.amqp;
    let (urgent_prefetch, normal_prefetch) = lane_prefetch(ctx.settings.prefetch());
    let mut consumers = Vec::new();
    let mut tags = Vec::new();
    for (queue, prefetch, lane) in [
        (&s.urgent_queue, urgent_prefetch, "urgent"),
        (&s.queue, normal_prefetch, "normal"),
    ] {
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("{base_tag}.{lane}.{generation}");
        consumers.push(
            channel
                .basic_consume(
                    ShortString::from(queue.as_str()),
                    ShortString::from(tag.as_str()),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?,
        );
        tags.push(tag);
    }
    let normal = consumers.pop().expect("two consumers");
    let urgent = consumers.pop().expect("two consumers");
    Ok((urgent, normal, tags))
}

async fn open_session(ctx: &Context, node: usize, n: u64) -> Result<(Session, usize), String> {
    let s = &ctx.settings.amqp;
    let limit = s.operation_timeout;
    let (connection, idx) = amqp::connect(&s.url, node, &ctx.consumer_name, limit).await?;
    let base_tag = format!("{}#{n}", ctx.consumer_name);
    let setup = async {
        let channel = connection.create_channel().await?;
        amqp::declare(&channel, s, &ctx.settings.retry).await?;
        let publisher = amqp::confirm_channel(&connection).await?;
        let (urgent, normal, tags) = start_consumers(ctx, &channel, &base_tag, 0).await?;
        Ok::<_, lapin::Error>((channel, publisher, urgent, normal, tags))
    };
    match amqp::within(limit, "setting up the session failed", setup).await {
        Ok((channel, publisher, urgent, normal, tags)) => Ok((
            Session {
                connection,
                channel,
                handle: Arc::new(SessionHandle::new(publisher, limit, ctx.stats.clone())),
                urgent,
                normal,
                tags,
                base_tag,
                generation: 0,
            },
            idx,
        )),
        Err(e) => {
            close(ctx, &connection, 320, "setup failed").await;
            Err(e.into())
        }
    }
}

async fn worker_loop(ctx: Arc<Context>, urgent: Slots, normal: Slots) {
    let batch_size = ctx.settings.batch_size;
    loop {
        // Urgent work first. A lock is held only while waiting for and taking jobs, and a batch is
        // gathered under the same lock it was received with: a worker never holds a job while it
        // waits for a lock another idle worker holds.
        let (lane, jobs) = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return,
            job = async { urgent.lock().await.recv().await } => (Lane::Urgent, job.map(|j| vec![j])),
            jobs = async {
                let mut rx = normal.lock().await;
                let first = rx.recv().await?;
                let mut jobs = Vec::with_capacity(batch_size);
                jobs.push(first);
                // Whatever else is already waiting joins the batch; nobody waits for it to fill.
                while jobs.len() < batch_size {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                Some(jobs)
            } => (Lane::Normal, jobs),
        };
        let Some(mut jobs) = jobs else { return };
        if jobs.len() == 1 {
            let job = jobs.pop().expect("one job");
            worker::process(&ctx, &job.session, lane, job.delivery).await;
            continue;
        }
        let session = jobs[0].session.clone();
        let mut deliveries = Vec::with_capacity(jobs.len());
        for job in jobs {
            // A batch never mixes sessions: a job from an older session goes alone.
            if Arc::ptr_eq(&job.session, &session) {
                deliveries.push(job.delivery);
            } else {
                worker::process(&ctx, &job.session, Lane::Normal, job.delivery).await;
            }
        }
        if deliveries.len() == 1 {
            let delivery = deliveries.pop().expect("one delivery");
            worker::process(&ctx, &session, Lane::Normal, delivery).await;
        } else {
            worker::process_batch(&ctx, &session, deliveries).await;
        }
    }
}
