//! A lone record on an idle daemon: nothing else queued, records sent one at a time to the work
//! queue, each once the previous one is stored and the daemon has been idle for a moment. Its
//! publish-to-commit is the floor under every other latency figure.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::daemon::{self, Daemon, DaemonConfig};
use crate::data::{Message, with_record_id};
use crate::latency::{self, Percentiles};
use crate::world::World;

/// The pause after each record is stored, before the next is sent: longer than the outbox relay's
/// idle poll (100 ms), so each record meets a daemon with nothing in flight.
const PAUSE: Duration = Duration::from_millis(250);

#[derive(Clone, Debug, Serialize)]
pub struct Lone {
    pub config: DaemonConfig,
    /// Publish-to-commit per record (`latency.rs`), in the order sent.
    pub latencies_ms: Vec<f64>,
    pub latency: Percentiles,
}

/// Starts the daemon on an empty world, lets it settle, then sends `samples` valid records of the
/// dataset (each with a new record id) one at a time.
pub async fn run(
    data: &[Message],
    samples: usize,
    config: DaemonConfig,
    logs: &Path,
    label: &str,
) -> Result<Lone> {
    let records: Vec<(uuid::Uuid, String)> = data
        .iter()
        .filter(|m| m.outcome.is_ok())
        .filter_map(|m| {
            let id = uuid::Uuid::new_v4();
            Some((id, with_record_id(&m.body, id)?))
        })
        .take(samples)
        .collect();
    anyhow::ensure!(
        records.len() == samples,
        "the dataset has fewer than {samples} valid records"
    );
    let world = World::full("lone").await?;
    let result = async {
        let db = world.db().await?;
        let log = logs.join(format!("lone-{label}.log"));
        let mut daemon = Daemon::start(&world, config, &log)?;
        let measured = async {
            daemon::wait_consuming(&world, &mut daemon, Duration::from_secs(30)).await?;
            // Past start-up: migrations checked, the outbox relay leading.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let sent_at =
                latency::one_at_a_time(&db, &mut daemon, &world.queue, records, PAUSE).await?;
            latency::publish_to_commit(&db, &sent_at).await
        }
        .await;
        daemon.stop().await?;
        let us = measured?;
        Ok(Lone {
            config,
            latencies_ms: us.iter().map(|u| *u as f64 / 1000.0).collect(),
            latency: Percentiles::of_micros(&us).context("at least one sample")?,
        })
    }
    .await;
    world.cleanup().await;
    if let Ok(r) = &result {
        eprintln!(
            "[bench] lone record, {label} ({}): stored in p50 {:.1} ms, max {:.1} ms ({} records, one at a time)",
            config.describe(),
            r.latency.p50_ms,
            r.latency.max_ms,
            r.latency.samples
        );
    }
    result
}
