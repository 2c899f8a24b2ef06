//! Sustained load: a paced publisher (persistent messages, publisher confirms in a bounded window)
//! steps its rate up while the daemon consumes. A step is kept up with when the publisher reached
//! its rate (>= 95 %) and the backlog at the step's end (messages sent but without an outcome in the
//! database) is under one second's worth. Then, at half the highest rate kept up with, the
//! publish-to-commit latency of every valid record: its send time (remembered per record id) against
//! its `received_at`.
//!
//! `received_at` is `now()`, the start of the storing transaction, so the latency excludes the commit
//! itself (one WAL flush, about a millisecond), and with batching it is the batch statement's start.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection, PublisherConfirm};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use crate::daemon::{self, Daemon, DaemonConfig};
use crate::data::{Message, with_record_id};
use crate::world::{self, World};

/// Confirms outstanding at once.
const WINDOW: usize = 2048;

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub target: u64,
    pub published: u64,
    pub seconds: f64,
    pub achieved: f64,
    /// Sent but without an outcome at the step's end.
    pub backlog_end: i64,
    pub kept_up: bool,
    /// Why not: "publisher" (could not send at the rate) or "daemon" (backlog grew).
    pub limited_by: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub rate: u64,
    pub seconds: f64,
    pub achieved: f64,
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sustained {
    pub config: DaemonConfig,
    pub steps: Vec<Step>,
    /// The highest step rate kept up with (0: not even the first).
    pub max_rate: u64,
    pub latency: Latency,
}

pub async fn run(
    data: &[Message],
    config: DaemonConfig,
    rates: &[u64],
    step: Duration,
    logs: &Path,
    label: &str,
) -> Result<Sustained> {
    let world = World::full("sustained").await?;
    let log = logs.join(format!("sustained-{label}.log"));
    let result = async {
        let db = world.db().await?;
        let mut daemon = Daemon::start(&world, config, &log)?;
        let r = measure(&world, &db, &mut daemon, data, config, rates, step).await;
        daemon.stop().await?;
        r
    }
    .await;
    world.cleanup().await;
    result
}

async fn measure(
    world: &World,
    db: &tokio_postgres::Client,
    daemon: &mut Daemon,
    data: &[Message],
    config: DaemonConfig,
    rates: &[u64],
    step: Duration,
) -> Result<Sustained> {
    daemon::wait_consuming(world, daemon, Duration::from_secs(30)).await?;
    let mut publisher = Paced::connect(world, data).await?;
    let result = step_up(db, daemon, &mut publisher, config, rates, step).await;
    let closed = publisher.close().await;
    let sustained = result?;
    closed?;
    Ok(sustained)
}

async fn step_up(
    db: &tokio_postgres::Client,
    daemon: &mut Daemon,
    publisher: &mut Paced<'_>,
    config: DaemonConfig,
    rates: &[u64],
    step: Duration,
) -> Result<Sustained> {
    let mut steps = Vec::new();
    for &target in rates {
        let (published, seconds) = publisher.step(target, step, None).await?;
        let backlog_end = publisher.sent as i64 - daemon::outcomes_estimate(db).await?;
        daemon.check_alive()?;
        let achieved = published as f64 / seconds;
        let limited_by = if achieved < 0.95 * target as f64 {
            Some("publisher".to_string())
        } else if backlog_end >= target as i64 {
            Some("daemon".to_string())
        } else {
            None
        };
        eprintln!(
            "[bench] sustained {}: target {target}/s, sent {achieved:.0}/s, backlog at the end {backlog_end}{}",
            config.describe(),
            limited_by
                .as_deref()
                .map(|l| format!(": not kept up ({l})"))
                .unwrap_or_default()
        );
        let kept_up = limited_by.is_none();
        steps.push(Step {
            target,
            published,
            seconds,
            achieved,
            backlog_end,
            kept_up,
            limited_by,
        });
        if !kept_up {
            break;
        }
    }
    let max_rate = steps
        .iter()
        .filter(|s| s.kept_up)
        .map(|s| s.target)
        .max()
        .unwrap_or(0);
    // Start the latency run on an empty queue.
    daemon::wait_outcomes(db, daemon, publisher.sent, Duration::from_secs(300)).await?;
    let rate = (max_rate / 2).max(500);
    let mut sent_at = Vec::new();
    let (published, seconds) = publisher.step(rate, step, Some(&mut sent_at)).await?;
    daemon::wait_outcomes(db, daemon, publisher.sent, Duration::from_secs(300)).await?;
    let mut latency = latency(db, &sent_at).await?;
    latency.rate = rate;
    latency.seconds = seconds;
    latency.achieved = published as f64 / seconds;
    eprintln!(
        "[bench] latency {} at {rate}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} records)",
        config.describe(),
        latency.p50_ms,
        latency.p99_ms,
        latency.max_ms,
        latency.samples
    );
    Ok(Sustained {
        config,
        steps,
        max_rate,
        latency,
    })
}

/// Latency of every tracked record: `received_at` minus its send time.
async fn latency(db: &tokio_postgres::Client, sent_at: &[(Uuid, i64)]) -> Result<Latency> {
    let ids: Vec<Uuid> = sent_at.iter().map(|(id, _)| *id).collect();
    let sent: std::collections::HashMap<Uuid, i64> = sent_at.iter().copied().collect();
    let rows = db
        .query(
            "SELECT record_id, received_at FROM crf_records WHERE record_id = ANY($1)",
            &[&ids],
        )
        .await?;
    let mut us: Vec<i64> = rows
        .iter()
        .filter_map(|r| {
            let id: Uuid = r.get(0);
            let at: chrono::DateTime<chrono::Utc> = r.get(1);
            Some(at.timestamp_micros() - sent.get(&id)?)
        })
        .collect();
    if us.is_empty() || us.len() != ids.len() {
        bail!("{} of {} tracked records are stored", us.len(), ids.len());
    }
    us.sort_unstable();
    let pct = |p: f64| {
        let rank = ((p * us.len() as f64).ceil() as usize).clamp(1, us.len());
        us[rank - 1] as f64 / 1000.0
    };
    Ok(Latency {
        rate: 0,
        seconds: 0.0,
        achieved: 0.0,
        samples: us.len(),
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    })
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Publishes the dataset's records round and round, each with a fresh record id, at a set rate.
struct Paced<'a> {
    conn: Connection,
    channel: Channel,
    queue: String,
    data: &'a [Message],
    cursor: usize,
    /// Messages sent so far, all steps together.
    sent: u64,
    confirms: mpsc::Sender<PublisherConfirm>,
    confirmer: JoinHandle<()>,
    nacked: Arc<AtomicU64>,
}

impl<'a> Paced<'a> {
    async fn connect(world: &World, data: &'a [Message]) -> Result<Paced<'a>> {
        let conn = world::amqp().await?;
        let channel = edc_ingest::broker::confirm_channel(&conn).await?;
        let (confirms, mut rx) = mpsc::channel::<PublisherConfirm>(WINDOW);
        let nacked = Arc::new(AtomicU64::new(0));
        let counter = nacked.clone();
        let confirmer = tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                if !matches!(c.await, Ok(c) if c.is_ack()) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Paced {
            conn,
            channel,
            queue: world.queue.clone(),
            data,
            cursor: 0,
            sent: 0,
            confirms,
            confirmer,
            nacked,
        })
    }

    /// Sends at `rate` messages per second for `duration` (never more, fewer if it cannot keep
    /// up); with `track`, remembers each valid record's id and send time. Returns the count sent
    /// and the step's seconds.
    async fn step(
        &mut self,
        rate: u64,
        duration: Duration,
        mut track: Option<&mut Vec<(Uuid, i64)>>,
    ) -> Result<(u64, f64)> {
        let total = rate * duration.as_secs();
        let started = Instant::now();
        let deadline = started + duration;
        let mut i = 0u64;
        while i < total && Instant::now() < deadline {
            let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
            while i < due {
                let m = &self.data[self.cursor % self.data.len()];
                self.cursor += 1;
                let id = Uuid::new_v4();
                let fresh = with_record_id(&m.body, id);
                let body = fresh.as_deref().unwrap_or(&m.body);
                let sent_us = unix_micros();
                self.publish(body).await?;
                if let Some(t) = track.as_deref_mut()
                    && fresh.is_some()
                    && m.outcome.is_ok()
                {
                    t.push((id, sent_us));
                }
                i += 1;
                self.sent += 1;
                if i.is_multiple_of(64) && Instant::now() >= deadline {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep_until(deadline).await;
        let nacked = self.nacked.load(Ordering::Relaxed);
        if nacked > 0 {
            bail!("the broker refused {nacked} published messages");
        }
        // Longer than `duration` if a send blocked past the deadline.
        Ok((i, started.elapsed().as_secs_f64()))
    }

    async fn publish(&self, body: &str) -> Result<()> {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(Uuid::new_v4().to_string()));
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(""),
                ShortString::from(self.queue.as_str()),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await?;
        self.confirms
            .send(confirm)
            .await
            .context("the confirm task ended")?;
        Ok(())
    }

    /// Waits for the outstanding confirms, then closes.
    async fn close(self) -> Result<()> {
        drop(self.confirms);
        tokio::time::timeout(Duration::from_secs(60), self.confirmer)
            .await
            .context("publisher confirms did not arrive within 60 s")??;
        let _ = self.conn.close(200, ShortString::from("done")).await;
        drop(self.channel);
        let nacked = self.nacked.load(Ordering::Relaxed);
        if nacked > 0 {
            bail!("the broker refused {nacked} published messages");
        }
        Ok(())
    }
}
