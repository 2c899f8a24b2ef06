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
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
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
    Urgent,
    Normal,
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
                let _ = session
                    .connection
                    .close(320, ShortString::from("session lost"))
                    .await;
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
            worker::requeue(&ctx, job.delivery).await;
        }
    }
    // Closing the connection closes its channels; anything still unacked returns to the queue. The
    // session (and so its channels) is dropped only after that, so no channel is half-closed first.
    if let Some(s) = last {
        let _ = s.connection.close(200, ShortString::from("shutdown")).await;
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
                end = pump(ctx, &mut session.urgent, urgent_tx, &handle, &session.connection) => end,
                end = pump(ctx, &mut session.normal, normal_tx, &handle, &session.connection) => end,
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

/// Moves one lane's deliveries into its slots until shutdown, a database pause, or the session dies.
/// A slot is reserved before a delivery is taken, so no delivery is ever held while waiting: the
/// future can be dropped at any await without losing one.
async fn pump(
    ctx: &Context,
    consumer: &mut lapin::Consumer,
    slots: &mpsc::Sender<Job>,
    session: &Arc<SessionHandle>,
    connection: &Connection,
) -> End {
    let mut gate = ctx.gate.subscribe();
    // A dead TCP connection may go unnoticed by a quiet consumer; look at the connection too.
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
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
            _ = watchdog.tick() => {
                if !connection.status().connected() {
                    return End::Lost("the broker connection is down".into());
                }
                continue;
            }
            next = consumer.next() => next,
        };
        match next {
            Some(Ok(delivery)) => permit.send(Job {
                delivery,
                session: session.clone(),
            }),
            Some(Err(e)) => return End::Lost(e.to_string()),
            None => return End::Lost("the broker cancelled a consumer".into()),
        }
    }
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
        let _ = s
            .channel
            .basic_cancel(
                ShortString::from(tag.as_str()),
                BasicCancelOptions::default(),
            )
            .await;
    }
    for consumer in [&mut s.urgent, &mut s.normal] {
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
        {
            worker::requeue(ctx, delivery).await;
        }
    }
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
    let (connection, idx) = amqp::connect(&s.url, node, &ctx.consumer_name).await?;
    let base_tag = format!("{}#{n}", ctx.consumer_name);
    let setup = async {
        let channel = connection.create_channel().await?;
        amqp::declare(&channel, s, &ctx.settings.retry).await?;
        let publisher = amqp::confirm_channel(&connection).await?;
        let (urgent, normal, tags) = start_consumers(ctx, &channel, &base_tag, 0).await?;
        Ok::<_, lapin::Error>((channel, publisher, urgent, normal, tags))
    };
    match setup.await {
        Ok((channel, publisher, urgent, normal, tags)) => Ok((
            Session {
                connection,
                channel,
                handle: Arc::new(SessionHandle { publisher }),
                urgent,
                normal,
                tags,
                base_tag,
                generation: 0,
            },
            idx,
        )),
        Err(e) => {
            let _ = connection
                .close(320, ShortString::from("setup failed"))
                .await;
            Err(format!("setting up the session failed: {e}"))
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
