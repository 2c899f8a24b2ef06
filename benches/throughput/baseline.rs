//! The plain consumer baseline: the end-to-end stage's backlog, drained by the consumer a team writes
//! first (`benches/baseline/consumer.py`: aio-pika and asyncpg, prefetch 16, pool 16, one
//! transaction per record writing the record and its audit row, the ack after the commit; no
//! validation, no de-identification, no events). Every run shows edc-ingest's drain rates as
//! multiples of this one.
//!
//! The Python interpreter is `EDC_BENCH_PYTHON`, which `scripts/bench.sh` points at a virtual
//! environment under `target/` with the pinned packages of `benches/baseline/requirements.txt`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::time::Instant;

use crate::cpu::CpuSample;
use crate::daemon::outcomes_exact;
use crate::data::{self, Message, Publish};
use crate::world::{self, World};

/// What the consumer prints when it has handled every message.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Report {
    pub handled: u64,
    pub stored: u64,
    /// Bodies it could not store, rejected without requeue (dead-lettered by the queue).
    pub rejected: u64,
    /// From its first delivery to its last settlement.
    pub seconds: f64,
    pub rate: f64,
    /// Its own user plus system CPU time, start-up included.
    pub cpu_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub publish: Publish,
    pub messages: u64,
    /// From the consumer's start until it had handled every message, as the daemon's drain is
    /// timed from its start.
    pub seconds: f64,
    pub rate: f64,
    pub cpu_us_per_record: f64,
    pub broker_cpu_us_per_record: f64,
    pub postgres_cpu_us_per_record: f64,
    pub machine_cpu_us_per_record: f64,
    pub consumer: Report,
    /// Rows in `crf_records` afterwards.
    pub stored: i64,
}

/// The interpreter with aio-pika and asyncpg.
fn python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("EDC_BENCH_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = world::repo().join("target/bench-venv/bin/python");
    if venv.exists() {
        return Ok(venv);
    }
    bail!(
        "no Python with aio-pika and asyncpg: run scripts/bench.sh, which installs them, or set EDC_BENCH_PYTHON"
    )
}

/// Preloads `messages` records of the dataset (as the end-to-end stage does) into a fresh world and
/// drains them with the plain consumer.
pub async fn run(data: &[Message], messages: usize, logs: &Path) -> Result<Baseline> {
    let python = python()?;
    let script = world::repo().join("benches/baseline/consumer.py");
    let world = World::full("baseline").await?;
    let result = async {
        let publish = data::preload(&world, data, messages, false).await?;
        let log = logs.join("baseline.log");
        let timeout = Duration::from_secs(60 + messages as u64 / 200);
        drain(&world, &python, &script, publish, timeout, &log).await
    }
    .await;
    world.cleanup().await;
    if let Ok(b) = &result {
        eprintln!(
            "[bench] plain consumer baseline: {} messages in {:.2} s = {:.0} records/s, {:.1} us CPU/record ({} stored, {} rejected)",
            b.messages,
            b.seconds,
            b.rate,
            b.cpu_us_per_record,
            b.consumer.stored,
            b.consumer.rejected
        );
    }
    result
}

async fn drain(
    world: &World,
    python: &Path,
    script: &Path,
    publish: Publish,
    timeout: Duration,
    log: &Path,
) -> Result<Baseline> {
    let n = publish.messages;
    let db = world.db().await?;
    let err = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let before = CpuSample::now();
    let started = Instant::now();
    let mut child = Command::new(python)
        .arg(script)
        .args(["--amqp-url", &world::amqp_url()])
        .args(["--queue", &world.queue])
        .args(["--pg-url", &world.db_url()])
        .args(["--count", &n.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let stdout = child.stdout.take().context("the consumer's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let report = tokio::time::timeout(timeout, async {
        while let Some(line) = lines.next_line().await? {
            if let Ok(r) = serde_json::from_str::<Report>(&line) {
                return Ok(r);
            }
        }
        bail!("the consumer exited without its report")
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();
    let after = CpuSample::now();
    let report = match report {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let status = child.wait().await?;
            bail!("{e} ({status}): {}", tail(log));
        }
        Err(_) => {
            child.kill().await?;
            let (s, _) = outcomes_exact(&db).await?;
            bail!(
                "timed out after {timeout:?} with {s} of {n} records stored: {}",
                tail(log)
            );
        }
    };
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(status) => {
            let status = status?;
            if !status.success() {
                eprintln!("[bench] warning: the plain consumer exited with {status}");
            }
        }
        Err(_) => {
            eprintln!("[bench] warning: the plain consumer did not exit within 30 s; killed");
            child.kill().await?;
        }
    }
    let (stored, _) = outcomes_exact(&db).await?;
    if report.handled != n || stored != report.stored as i64 {
        bail!(
            "the plain consumer handled {} of {n} messages and stored {} (crf_records holds {stored})",
            report.handled,
            report.stored
        );
    }
    let per = |s: f64| s * 1e6 / n as f64;
    Ok(Baseline {
        publish,
        messages: n,
        seconds,
        rate: n as f64 / seconds,
        cpu_us_per_record: per(report.cpu_seconds),
        broker_cpu_us_per_record: per(after.broker - before.broker),
        postgres_cpu_us_per_record: per(after.postgres - before.postgres),
        machine_cpu_us_per_record: per(after.machine - before.machine),
        consumer: report,
        stored,
    })
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        format!("(no output; log {})", log.display())
    } else {
        tail
    }
}
