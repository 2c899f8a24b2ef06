//! edc-ingest end to end: a preloaded backlog (published with `tools::publish`, publisher confirms)
//! drained by the real daemon binary; and the same for a range of worker counts.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::Measured;
use crate::daemon::{self, DaemonConfig, Drain};
use crate::data::{self, Message, Publish};
use crate::world::World;

#[derive(Clone, Debug, Serialize)]
pub struct EndToEnd {
    pub publish: Publish,
    pub drain: Drain,
}

/// Publishes `messages` records to a fresh world, then drains them with `config`.
pub async fn run(
    data: &[Message],
    messages: usize,
    config: DaemonConfig,
    logs: &Path,
    label: &str,
) -> Result<EndToEnd> {
    let world = World::full("e2e").await?;
    let result = async {
        let publish = data::preload(&world, data, messages, false).await?;
        // Generous: a drain at 500 records/s still fits.
        let timeout = Duration::from_secs(60 + messages as u64 / 500);
        let log = logs.join(format!("e2e-{label}.log"));
        let drain = daemon::drain(&world, config, messages as u64, timeout, &log).await?;
        Ok(EndToEnd { publish, drain })
    }
    .await;
    world.cleanup().await;
    if let Ok(r) = &result {
        eprintln!(
            "[bench] end to end, {label} ({}): {} messages in {:.2} s = {:.0} records/s, {:.1} us CPU/record, preload {:.0} msg/s",
            config.describe(),
            messages,
            r.drain.seconds,
            r.drain.rate,
            r.drain.cpu_us_per_record,
            r.publish.rate
        );
    }
    result
}

#[derive(Debug, Serialize)]
pub struct SweepPoint {
    pub config: DaemonConfig,
    pub result: Measured<Drain>,
}

/// Drain throughput of each configuration, each on a fresh world preloaded with `messages`
/// records.
pub async fn sweep(
    data: &[Message],
    messages: usize,
    configs: &[DaemonConfig],
    logs: &Path,
) -> Vec<SweepPoint> {
    let mut points = Vec::new();
    for &config in configs {
        let label = format!(
            "{}-{}-{}-{}",
            config.workers, config.pool_size, config.batch_size, config.committers
        );
        let r = async {
            let world = World::full("sweep").await?;
            let result = async {
                data::preload(&world, data, messages, false).await?;
                let timeout = Duration::from_secs(60 + messages as u64 / 200);
                let log = logs.join(format!("sweep-{label}.log"));
                daemon::drain(&world, config, messages as u64, timeout, &log).await
            }
            .await;
            world.cleanup().await;
            result
        }
        .await;
        match &r {
            Ok(d) => eprintln!(
                "[bench] sweep, {}: {:.0} records/s, {:.1} us CPU/record, {} connections at most, peak RSS {:.1} MiB",
                config.describe(),
                d.rate,
                d.cpu_us_per_record,
                d.peak_connections,
                d.peak_rss_kib as f64 / 1024.0
            ),
            Err(e) => eprintln!("[bench] sweep, {}: failed: {e:#}", config.describe()),
        }
        points.push(SweepPoint {
            config,
            result: Measured::from_result(r),
        });
    }
    points
}
