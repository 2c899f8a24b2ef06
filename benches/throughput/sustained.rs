//! Sustained load: a paced publisher (persistent messages, publisher confirms in a bounded window)
//! steps its rate up while the daemon consumes. A step is kept up with when the publisher reached
//! its rate (>= 95 %) and the backlog at the step's end (messages sent but without an outcome in the
//! database) is under one second's worth. Then, at half the highest rate kept up with, the
//! publish-to-commit latency (`latency.rs`) of every valid record sent.
//!
//! Throughout, a subscriber of the events exchange measures the outbox relay's lag (`relay.rs`), for
//! each step and for the latency run.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
use crate::latency::{self, Percentiles, unix_micros};
use crate::relay::{Lag, Tap};
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
    /// The step's start and end, Unix microseconds.
    pub from_us: i64,
    pub to_us: i64,
    /// The relay's lag for the records whose transaction started during the step.
    pub relay: Option<Lag>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub rate: u64,
    pub seconds: f64,
    pub achieved: f64,
    /// Publish-to-commit of every valid record sent during the run.
    #[serde(flatten)]
    pub publish_to_commit: Percentiles,
    /// The relay's lag for the records whose transaction started during the run.
    pub relay: Lag,
}

/// The relay's lag over the whole stage.
#[derive(Clone, Debug, Serialize)]
pub struct RelayLag {
    /// Record events expected (one per stored record) and received by the end of the stage.
    pub expected: i64,
    pub received: usize,
    /// Events whose body had no readable `occurred_at`.
    pub unreadable: u64,
    /// At the highest rate kept up with (None if no step was).
    pub at_max_rate: Option<Lag>,
    pub whole: Lag,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sustained {
    pub config: DaemonConfig,
    pub steps: Vec<Step>,
    /// The highest step rate kept up with (0: not even the first).
    pub max_rate: u64,
    pub latency: Latency,
    pub relay: RelayLag,
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
        let tap = Tap::start(&world).await?;
        let r = async {
            let mut daemon = Daemon::start(&world, config, &log)?;
            let r = measure(&world, &db, &mut daemon, &tap, data, config, rates, step).await;
            daemon.stop().await?;
            r
        }
        .await;
        tap.close().await;
        r
    }
    .await;
    world.cleanup().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    world: &World,
    db: &tokio_postgres::Client,
    daemon: &mut Daemon,
    tap: &Tap,
    data: &[Message],
    config: DaemonConfig,
    rates: &[u64],
    step: Duration,
) -> Result<Sustained> {
    daemon::wait_consuming(world, daemon, Duration::from_secs(30)).await?;
    let mut publisher = Paced::connect(world, data).await?;
    let result = step_up(db, daemon, tap, &mut publisher, config, rates, step).await;
    let closed = publisher.close().await;
    let sustained = result?;
    closed?;
    Ok(sustained)
}

async fn step_up(
    db: &tokio_postgres::Client,
    daemon: &mut Daemon,
    tap: &Tap,
    publisher: &mut Paced<'_>,
    config: DaemonConfig,
    rates: &[u64],
    step: Duration,
) -> Result<Sustained> {
    let stage_from = unix_micros();
    let mut steps = Vec::new();
    for &target in rates {
        let from_us = unix_micros();
        let (published, seconds) = publisher.step(target, step, None).await?;
        let to_us = unix_micros();
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
            from_us,
            to_us,
            relay: None,
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
    let from_us = unix_micros();
    let (published, seconds) = publisher.step(rate, step, Some(&mut sent_at)).await?;
    let to_us = unix_micros();
    daemon::wait_outcomes(db, daemon, publisher.sent, Duration::from_secs(300)).await?;
    let us = latency::publish_to_commit(db, &sent_at).await?;
    let publish_to_commit = Percentiles::of_micros(&us).context("no record was tracked")?;
    eprintln!(
        "[bench] latency {} at {rate}/s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} records)",
        config.describe(),
        publish_to_commit.p50_ms,
        publish_to_commit.p99_ms,
        publish_to_commit.max_ms,
        publish_to_commit.samples
    );

    // Every stored record has its event: wait for the relay to publish them all.
    let expected: i64 = db
        .query_one("SELECT count(*) FROM crf_records", &[])
        .await?
        .get(0);
    let received = tap
        .wait_for(expected as usize, Duration::from_secs(60))
        .await;
    for s in &mut steps {
        s.relay = Some(tap.lag(s.from_us, s.to_us));
    }
    let at_max_rate = steps
        .iter()
        .find(|s| s.kept_up && s.target == max_rate)
        .and_then(|s| s.relay.clone());
    let relay = RelayLag {
        expected,
        received,
        unreadable: tap.unreadable(),
        at_max_rate,
        whole: tap.lag(stage_from, unix_micros()),
    };
    let show = |l: &Option<Percentiles>| {
        l.as_ref().map_or("no events".to_string(), |p| {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                p.p50_ms, p.p99_ms, p.max_ms
            )
        })
    };
    eprintln!(
        "[bench] relay lag {}: at {max_rate}/s {}; whole stage {} ({received} of {expected} record events)",
        config.describe(),
        show(&relay.at_max_rate.as_ref().and_then(|l| l.lag.clone())),
        show(&relay.whole.lag),
    );
    Ok(Sustained {
        config,
        steps,
        max_rate,
        latency: Latency {
            rate,
            seconds,
            achieved: published as f64 / seconds,
            publish_to_commit,
            relay: tap.lag(from_us, to_us),
        },
        relay,
    })
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
