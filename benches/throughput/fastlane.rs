//! The SAE fast lane: how long a serious adverse event published to the urgent queue waits while the
//! daemon is busy with a backlog of ordinary records.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use serde::Serialize;

use crate::daemon::{self, Daemon, DaemonConfig};
use crate::data::{self, Message};
use crate::world::{self, World};

#[derive(Clone, Debug, Serialize)]
pub struct FastLane {
    pub config: DaemonConfig,
    pub backlog: usize,
    /// Publish (confirmed) to stored, per urgent record, in the order sent.
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
            let conn = world::amqp().await?;
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let mut latencies_ms = Vec::with_capacity(samples);
            for _ in 0..samples {
                let (id, body) = serious_adverse_event();
                let sent = Instant::now();
                ch.basic_publish(
                    ShortString::from(""),
                    ShortString::from(urgent_queue.as_str()),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type(ShortString::from("application/json")),
                )
                .await?
                .await?;
                stored(&db, &mut daemon, id).await?;
                latencies_ms.push(sent.elapsed().as_secs_f64() * 1e3);
                // Short: with batch 64 the whole backlog drains in a few seconds.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let done = daemon::outcomes_estimate(&db).await?;
            let _ = conn.close(200, ShortString::from("bye")).await;
            Ok::<_, anyhow::Error>((latencies_ms, backlog as i64 - (done - samples as i64)))
        }
        .await;
        daemon.stop().await?;
        let (latencies_ms, backlog_left) = measured?;
        let mut sorted = latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        Ok(FastLane {
            config,
            backlog,
            p50_ms: sorted[sorted.len() / 2],
            max_ms: *sorted.last().context("at least one sample")?,
            latencies_ms,
            backlog_left,
        })
    }
    .await;
    world.cleanup().await;
    if let Ok(r) = &result {
        eprintln!(
            "[bench] fast lane, {label} ({}): urgent record stored in p50 {:.0} ms, max {:.0} ms, {} of the {} backlog still waiting",
            config.describe(),
            r.p50_ms,
            r.max_ms,
            r.backlog_left,
            backlog
        );
    }
    result
}

async fn stored(db: &tokio_postgres::Client, daemon: &mut Daemon, id: uuid::Uuid) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = db
            .query_opt("SELECT 1 FROM crf_records WHERE record_id = $1", &[&id])
            .await?;
        if found.is_some() {
            return Ok(());
        }
        daemon.check_alive()?;
        if Instant::now() >= deadline {
            bail!("an urgent record was not stored within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
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
