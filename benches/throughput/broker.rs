//! Broker ceiling: how fast a bare lapin consumer that does nothing but ack can empty a preloaded
//! quorum-queue backlog (the daemon's queue declaration, the same generated bodies), at a given
//! prefetch, acking each delivery or every N-th one with `multiple`.

use std::time::Duration;

use anyhow::{Context as _, Result};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use serde::Serialize;
use tokio::time::Instant;

use crate::Measured;
use crate::data::{self, Message, Publish};
use crate::world::{self, World};

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Ack {
    /// One basic.ack per delivery.
    Individual,
    /// basic.ack with multiple=true every `every` deliveries (and for the last one).
    Multiple { every: u16 },
}

impl Ack {
    pub fn describe(&self) -> String {
        match self {
            Ack::Individual => "individual acks".into(),
            Ack::Multiple { every } => format!("multiple acks every {every}"),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ConsumeRun {
    pub prefetch: u16,
    pub ack: Ack,
    pub messages: u64,
    pub seconds: f64,
    pub rate: f64,
    /// The preload before it (tools::publish, publisher confirms).
    pub publish: Publish,
}

#[derive(Debug, Serialize)]
pub struct Broker {
    pub messages: usize,
    pub runs: Vec<Measured<ConsumeRun>>,
}

impl Broker {
    pub fn find(&self, prefetch: u16, multiple: bool) -> Option<&ConsumeRun> {
        self.runs
            .iter()
            .filter_map(Measured::ok)
            .find(|r| r.prefetch == prefetch && matches!(r.ack, Ack::Multiple { .. }) == multiple)
    }

    /// Mean rate of the preloads (publisher confirms, tools::publish).
    pub fn publish_rate(&self) -> Option<f64> {
        let rates: Vec<f64> = self
            .runs
            .iter()
            .filter_map(Measured::ok)
            .map(|r| r.publish.rate)
            .collect();
        (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / rates.len() as f64)
    }
}

/// Every prefetch in `prefetches`, each with individual and with multiple acks, on a fresh queue
/// preloaded with `messages` records.
pub async fn run(data: &[Message], messages: usize, prefetches: &[u16]) -> Broker {
    let mut runs = Vec::new();
    for &prefetch in prefetches {
        for ack in [
            Ack::Individual,
            Ack::Multiple {
                every: (prefetch / 2).max(1),
            },
        ] {
            let r = one(data, messages, prefetch, ack).await;
            if let Ok(r) = &r {
                eprintln!(
                    "[bench] broker ceiling, prefetch {prefetch}, {}: {:.0} msg/s (preload {:.0} msg/s)",
                    ack.describe(),
                    r.rate,
                    r.publish.rate
                );
            }
            runs.push(Measured::from_result(r));
        }
    }
    Broker { messages, runs }
}

async fn one(data: &[Message], messages: usize, prefetch: u16, ack: Ack) -> Result<ConsumeRun> {
    let world = World::queues_only("broker").await?;
    let result = async {
        let publish = data::preload(&world, data, messages, false).await?;
        let (n, seconds) = consume(&world, messages as u64, prefetch, ack).await?;
        Ok(ConsumeRun {
            prefetch,
            ack,
            messages: n,
            seconds,
            rate: n as f64 / seconds,
            publish,
        })
    }
    .await;
    world.cleanup().await;
    result
}

/// Consumes and acks `n` messages; returns the count and the seconds from basic.consume to the
/// last ack.
async fn consume(world: &World, n: u64, prefetch: u16, ack: Ack) -> Result<(u64, f64)> {
    let conn = world::amqp().await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let started = Instant::now();
    let mut consumer = ch
        .basic_consume(
            ShortString::from(world.queue.as_str()),
            ShortString::from("edc-bench-bare-consumer"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut got = 0u64;
    while got < n {
        let delivery = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .with_context(|| format!("timed out after {got} of {n} deliveries"))?
            .context("the broker cancelled the consumer")??;
        got += 1;
        match ack {
            Ack::Individual => delivery.ack(BasicAckOptions::default()).await?,
            Ack::Multiple { every } => {
                if got.is_multiple_of(u64::from(every)) || got == n {
                    delivery.ack(BasicAckOptions { multiple: true }).await?
                } else {
                    true
                }
            }
        };
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = conn.close(200, ShortString::from("done")).await;
    Ok((got, seconds))
}
