//! The outbox relay's lag, commit to publish: a subscriber of the world's events exchange (an
//! exclusive queue bound to `record.*`, consumed without acks) notes when each record event arrives
//! and compares it with the event's `occurred_at`.
//!
//! `occurred_at` is `now()` of the transaction that stored the record (migrations/V7,
//! `outbox_event`): its start. So a lag is the storing statement and its commit, the relay's wait
//! for its next round (it polls every 100 ms when idle), its read, the publish, and the delivery to
//! this subscriber: an upper bound of commit-to-publish, by the statement's few milliseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Connection, ExchangeKind};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::latency::{Percentiles, unix_micros};
use crate::world::{self, World};

/// Events that arrived: (occurred_at, arrival - occurred_at), both in microseconds.
type Samples = Arc<Mutex<Vec<(i64, i64)>>>;

/// The relay's lag over a stretch of time: the events of the transactions that started in it.
#[derive(Clone, Debug, Serialize)]
pub struct Lag {
    pub events: usize,
    /// None when no event of that stretch arrived.
    pub lag: Option<Percentiles>,
}

pub struct Tap {
    conn: Connection,
    task: JoinHandle<()>,
    samples: Samples,
    /// Events whose body had no readable `occurred_at`.
    unreadable: Arc<AtomicU64>,
}

impl Tap {
    /// Declares the world's events exchange as the relay does (a durable topic; idempotent), binds an
    /// exclusive queue to `record.*` and starts noting arrivals. Start it before the daemon.
    pub async fn start(world: &World) -> Result<Tap> {
        let exchange = world.settings().amqp.events_exchange.clone();
        let conn = world::amqp().await?;
        let ch = conn.create_channel().await?;
        ch.exchange_declare(
            ShortString::from(exchange.as_str()),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring the events exchange {exchange}"))?;
        let queue = ch
            .queue_declare(
                ShortString::from(""),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        ch.queue_bind(
            queue.name().clone(),
            ShortString::from(exchange.as_str()),
            ShortString::from("record.*"),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let mut consumer = ch
            .basic_consume(
                queue.name().clone(),
                ShortString::from("edc-bench-relay-lag"),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let samples: Samples = Arc::default();
        let unreadable = Arc::new(AtomicU64::new(0));
        let (into, bad) = (samples.clone(), unreadable.clone());
        let task = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let arrived = unix_micros();
                match occurred_at(&delivery.data) {
                    Some(at) => into.lock().expect("samples").push((at, arrived - at)),
                    None => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(Tap {
            conn,
            task,
            samples,
            unreadable,
        })
    }

    /// Record events that arrived so far (readable or not).
    pub fn received(&self) -> usize {
        self.samples.lock().expect("samples").len()
            + self.unreadable.load(Ordering::Relaxed) as usize
    }

    /// Waits until `n` record events have arrived or `timeout` passed; returns the count.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.received() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.received()
    }

    /// The lag of the events whose transaction started in `[from, to)` (Unix microseconds).
    pub fn lag(&self, from: i64, to: i64) -> Lag {
        let us: Vec<i64> = self
            .samples
            .lock()
            .expect("samples")
            .iter()
            .filter(|(at, _)| (from..to).contains(at))
            .map(|(_, lag)| *lag)
            .collect();
        Lag {
            events: us.len(),
            lag: Percentiles::of_micros(&us),
        }
    }

    /// Events whose body had no readable `occurred_at`.
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(Ordering::Relaxed)
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, ShortString::from("bye")).await;
        self.task.abort();
    }
}

/// The event body's `occurred_at` in Unix microseconds. Only that field is read; the rest of the
/// body is skipped without being built.
fn occurred_at(body: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        occurred_at: &'a str,
    }
    let event: Event = serde_json::from_slice(body).ok()?;
    let at = chrono::DateTime::parse_from_rfc3339(event.occurred_at).ok()?;
    Some(at.timestamp_micros())
}
