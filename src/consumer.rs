//! The consuming side: a supervisor that keeps one AMQP session alive, and the fixed worker set.
//!
//! ```text
//!  supervisor loop: connect (fail-over, backoff + jitter) -> declare -> qos(prefetch = workers)
//!        -> consume -> pump deliveries into a 1-slot channel -> ... session lost? reconnect
//!  workers (N tasks): take a job from the channel -> worker::process -> settle -> next
//! ```
//!
//! The channel between them holds one job, so at most `workers` deliveries are unacked at the
//! broker (its prefetch) and nothing piles up in memory whatever the backlog. A job remembers the
//! session it came from; if that session dies, its ack fails harmlessly: the data committed, and the
//! redelivery is recognised as a duplicate.
//!
//! Shutdown: cancel the consumer (basic.cancel), give back what was delivered but not started, let the
//! workers finish their jobs within `shutdown_grace`, then close the channels and the connection.

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

struct Job {
    delivery: Delivery,
    session: Arc<SessionHandle>,
}

struct Session {
    connection: Connection,
    channel: Channel,
    handle: Arc<SessionHandle>,
    consumer: lapin::Consumer,
    tag: String,
    base_tag: String,
    /// Consumers started on this channel so far (one more after each database pause).
    generation: u32,
}

enum End {
    Shutdown,
    Lost(String),
}

/// Runs until shutdown. Returns when every worker has finished (or the grace period ran out) and the
/// broker connection is closed.
pub async fn run(ctx: Arc<Context>) {
    // One slot per record a worker may take at once: a worker's batch can gather without waiting.
    let (tx, rx) = mpsc::channel::<Job>(ctx.settings.batch_size);
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = JoinSet::new();
    for _ in 0..ctx.settings.workers {
        workers.spawn(worker_loop(ctx.clone(), rx.clone()));
    }

    let mut node = 0;
    let mut sessions = 0u64;
    let mut wait = ctx.settings.amqp.reconnect_initial;
    let mut last: Option<Session> = None;
    while !ctx.shutdown.is_cancelled() {
        sessions += 1;
        let session = match open_session(&ctx, node, sessions).await {
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
        info!(tag = %session.tag, prefetch = ctx.settings.prefetch(), queue = %ctx.settings.amqp.queue, "consuming");
        let mut session = session;
        match pump(&ctx, &mut session, &tx).await {
            End::Shutdown => {
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
    if let Some(s) = &last {
        let _ = s
            .channel
            .basic_cancel(
                ShortString::from(s.tag.as_str()),
                BasicCancelOptions::default(),
            )
            .await;
    }
    drop(tx);
    if let Some(s) = &mut last {
        give_back_undelivered(&ctx, s).await;
    }
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
    while let Ok(job) = rx.lock().await.try_recv() {
        worker::requeue(&ctx, job.delivery).await;
    }
    if let Some(s) = last {
        let _ = s
            .handle
            .publisher
            .close(200, ShortString::from("shutdown"))
            .await;
        let _ = s.channel.close(200, ShortString::from("shutdown")).await;
        let _ = s.connection.close(200, ShortString::from("shutdown")).await;
    }
}

/// Deliveries the broker already sent but no worker took: back to the queue, now.
async fn give_back_undelivered(ctx: &Context, s: &mut Session) {
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(200), s.consumer.next()).await
    {
        worker::requeue(ctx, delivery).await;
    }
}

fn jitter(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.5..1.0);
    d.mul_f64(factor)
}

async fn open_session(ctx: &Context, node: usize, n: u64) -> Result<(Session, usize), String> {
    let s = &ctx.settings.amqp;
    let (connection, idx) = amqp::connect(&s.url, node, &ctx.consumer_name).await?;
    let setup = async {
        let channel = connection.create_channel().await?;
        amqp::declare(&channel, s, &ctx.settings.retry).await?;
        let prefetch = u16::try_from(ctx.settings.prefetch()).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let publisher = amqp::confirm_channel(&connection).await?;
        let tag = format!("{}#{n}", ctx.consumer_name);
        let consumer = channel
            .basic_consume(
                ShortString::from(s.queue.as_str()),
                ShortString::from(tag.as_str()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, lapin::Error>((channel, publisher, consumer, tag))
    };
    match setup.await {
        Ok((channel, publisher, consumer, tag)) => Ok((
            Session {
                connection,
                channel,
                handle: Arc::new(SessionHandle { publisher }),
                consumer,
                base_tag: tag.clone(),
                tag,
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

/// Moves deliveries from the consumer to the workers until shutdown or the session dies. While the
/// database gate is closed, the consumer is cancelled and nothing new is taken.
async fn pump(ctx: &Context, session: &mut Session, tx: &mpsc::Sender<Job>) -> End {
    let mut gate = ctx.gate.subscribe();
    // A dead TCP connection may go unnoticed by a quiet consumer stream; look at the connection too.
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    loop {
        if !*gate.borrow_and_update()
            && let Err(end) = pause(ctx, session, &mut gate).await
        {
            return end;
        }
        let next = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return End::Shutdown,
            _ = gate.changed() => continue,
            _ = watchdog.tick() => {
                if !session.connection.status().connected() {
                    return End::Lost("the broker connection is down".into());
                }
                continue;
            }
            next = session.consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return End::Lost(e.to_string()),
            None => return End::Lost("the broker cancelled the consumer".into()),
        };
        let job = Job {
            delivery,
            session: session.handle.clone(),
        };
        tokio::select! {
            biased;
            sent = tx.reserve() => match sent {
                Ok(permit) => permit.send(job),
                Err(_) => return End::Shutdown,
            },
            _ = ctx.shutdown.cancelled() => {
                worker::requeue(ctx, job.delivery).await;
                return End::Shutdown;
            }
        }
    }
}

/// The database is unavailable: cancel the consumer, give back what was delivered but not started,
/// wait for the gate to open, then consume again.
async fn pause(
    ctx: &Context,
    session: &mut Session,
    gate: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), End> {
    let cancelled = session
        .channel
        .basic_cancel(
            ShortString::from(session.tag.as_str()),
            BasicCancelOptions::default(),
        )
        .await;
    if let Err(e) = cancelled {
        return Err(End::Lost(format!("cancelling the consumer failed: {e}")));
    }
    give_back_undelivered(ctx, session).await;
    tokio::select! {
        _ = ctx.shutdown.cancelled() => return Err(End::Shutdown),
        opened = gate.wait_for(|open| *open) => if opened.is_err() { return Err(End::Shutdown) },
    }
    session.generation += 1;
    let tag = format!("{}.{}", session.base_tag, session.generation);
    match session
        .channel
        .basic_consume(
            ShortString::from(ctx.settings.amqp.queue.as_str()),
            ShortString::from(tag.as_str()),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    {
        Ok(consumer) => {
            session.consumer = consumer;
            session.tag = tag;
            info!(tag = %session.tag, "consuming again");
            Ok(())
        }
        Err(e) => Err(End::Lost(format!("resuming the consumer failed: {e}"))),
    }
}

async fn worker_loop(ctx: Arc<Context>, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let batch_size = ctx.settings.batch_size;
    let mut jobs = Vec::with_capacity(batch_size);
    loop {
        {
            let mut rx = rx.lock().await;
            let first = tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => None,
                job = rx.recv() => job,
            };
            let Some(first) = first else { return };
            jobs.push(first);
            // Whatever else is already waiting joins the batch; nobody waits for a batch to fill.
            while jobs.len() < batch_size {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        if jobs.len() == 1 {
            let job = jobs.pop().expect("one job");
            worker::process(&ctx, &job.session, job.delivery).await;
        } else {
            let session = jobs[0].session.clone();
            let mut deliveries = Vec::with_capacity(jobs.len());
            for job in jobs.drain(..) {
                // A batch never mixes sessions: a job from another session goes alone.
                if Arc::ptr_eq(&job.session, &session) {
                    deliveries.push(job.delivery);
                } else {
                    worker::process(&ctx, &job.session, job.delivery).await;
                }
            }
            worker::process_batch(&ctx, &session, deliveries).await;
        }
    }
}
