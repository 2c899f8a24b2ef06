//! The SAE fast lane: how long a serious adverse event published to the urgent queue waits while the
//! daemon is busy with a backlog of ordinary records.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::daemon::{self, Daemon, DaemonConfig};
use crate::data::{self, Message};
use crate::latency::{self, Percentiles};
use crate::world::World;

#[derive(Clone, Debug, Serialize)]
pub struct FastLane {
    pub config: DaemonConfig,
    pub backlog: usize,
    /// Publish-to-commit per urgent record (`latency.rs`), in the order sent.
    pub latencies_ms: Vec<f64>,
    pub p50_ms: f64,
    pub max_ms: f64,
    /// Ordinary records still without an outcome when the last urgent record was stored.
    pub backlog_left: i64,
}

/// Preloads `backlog` ordinary records, starts the daemon, and once it is busy publishes `samples`
/// urgent records one after another, each once the previous one is stored.
pub async fn run(
    data: &[Message],
    backlog: usize,
    samples: usize,
    config: DaemonConfig,
    logs: &Path,
    label: &str,
) -> Result<FastLane> {
    let world = World::full("fastlane").await?;
    let result = async {
        let urgent_queue = world.settings().amqp.urgent_queue.clone();
        data::preload(&world, data, backlog, false).await?;
        let db = world.db().await?;
        let log = logs.join(format!("fastlane-{label}.log"));
        let mut daemon = Daemon::start(&world, config, &log)?;
        let measured = async {
            // Busy: 2% of the backlog done, the rest still waiting.
            let started = (backlog / 50) as u64;
            daemon::wait_outcomes(&db, &mut daemon, started, Duration::from_secs(120)).await?;
            let urgent = (0..samples).map(|_| serious_adverse_event()).collect();
            // Short pauses: with batch 64 the whole backlog drains in a few seconds.
            let pause = Duration::from_millis(50);
            let sent_at =
                latency::one_at_a_time(&db, &mut daemon, &urgent_queue, urgent, pause).await?;
            let done = daemon::outcomes_estimate(&db).await?;
            let us = latency::publish_to_commit(&db, &sent_at).await?;
            Ok::<_, anyhow::Error>((us, backlog as i64 - (done - samples as i64)))
        }
        .await;
        daemon.stop().await?;
        let (us, backlog_left) = measured?;
        let p = Percentiles::of_micros(&us).context("at least one sample")?;
        Ok(FastLane {
            config,
            backlog,
            p50_ms: p.p50_ms,
            max_ms: p.max_ms,
            latencies_ms: us.iter().map(|u| *u as f64 / 1000.0).collect(),
            backlog_left,
        })
    }
    .await;
    world.cleanup().await;
    if let Ok(r) = &result {
        eprintln!(
            "[bench] fast lane, {label} ({}): urgent record stored in p50 {:.1} ms, max {:.1} ms, {} of the {} backlog still waiting",
            config.describe(),
            r.p50_ms,
            r.max_ms,
            r.backlog_left,
            backlog
        );
    }
    result
}

/// A valid DEMO-001 AE record with AESER = Y (an SAE), no identifiers.
fn serious_adverse_event() -> (uuid::Uuid, String) {
    let id = uuid::Uuid::new_v4();
    let body = serde_json::json!({
        "schema": "edc.crf.v1", "record_id": id.to_string(), "version": 1,
        "study": "DEMO-001", "site": "SITE-03", "subject": "DEMO-001-03-0042", "visit": "WEEK4",
        "form": "AE", "captured_at": "2026-11-20T10:15:00Z", "entered_by": "crc-17",
        "items": {"AETERM": "Anaphylaxis", "AESER": "Y", "AESTDAT": "2026-11-20"}
    });
    (id, body.to_string())
}
