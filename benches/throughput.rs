//! edc-ingest throughput, latency and memory against the machine's own ceilings.
//!
//! Run it with `scripts/bench.sh [--quick]` (or `cargo bench --bench throughput -- [OPTIONS]` with
//! the services up and `eval "$(scripts/services.sh env)"`). In one run, on the same generated
//! DEMO-001 records (1 % invalid, 5 % queried):
//!
//! 1. broker ceiling: a bare lapin consumer that only acks a preloaded quorum-queue backlog;
//! 2. database ceiling: the daemon's rows written straight to PostgreSQL, 1 and 64 per transaction;
//! 3. plain consumer baseline: the same backlog as end to end, drained by a straightforward Python
//!    consumer (`benches/baseline/consumer.py`); the daemon's drain rates are shown against it;
//! 4. end to end: the real daemon binary draining a preloaded backlog, default and best config;
//!    the SAE fast lane behind a backlog; a lone record on an idle daemon;
//! 5. sustained: the highest paced publish rate the daemon keeps up with, the latency at half, and
//!    the outbox relay's lag throughout;
//! 6. memory: peak RSS on a small backlog and on a large one;
//! 7. sweep: drain rate, CPU, connections and peak RSS of workers = pool from 4 to 256, then of
//!    other committers and batch sizes, the first drawn as `sweep.svg`;
//! 8. fair share: two replicas of the default configuration on one backlog, each one's part;
//! 9. ODM: `odm import` of a generated ODM file (MB/s, forms/s, peak RSS), and the daemon draining
//!    its ODM messages beside as many JSON records and a backlog of both;
//! 10. before/after (with `--before PATH`): an earlier build and this one drain the same backlog in
//!     alternating rounds; the medians of each side and their ratio.
//!
//! Prints one table (figures, targets, ratios) and writes `results.json`, `results.md`,
//! `sweep.svg` and the daemons' logs to `target/bench/<UTC timestamp>/`. Each stage uses its own
//! database and queues (`edc_bench_*`, `edc.bench.*`) and removes them; Ctrl-C cleans up too.
//!
//! The modules live in `benches/throughput/`: a `benches/*.rs` file would be auto-discovered by
//! cargo as a bench target of its own.

#![forbid(unsafe_code)]

#[path = "throughput/baseline.rs"]
mod baseline;
#[path = "throughput/before.rs"]
mod before;
#[path = "throughput/broker.rs"]
mod broker;
#[path = "throughput/cpu.rs"]
mod cpu;
#[path = "throughput/daemon.rs"]
mod daemon;
#[path = "throughput/data.rs"]
mod data;
#[path = "throughput/database.rs"]
mod database;
#[path = "throughput/endtoend.rs"]
mod endtoend;
#[path = "throughput/fastlane.rs"]
mod fastlane;
#[path = "throughput/latency.rs"]
mod latency;
#[path = "throughput/lone.rs"]
mod lone;
#[path = "throughput/machine.rs"]
mod machine;
#[path = "throughput/memory.rs"]
mod memory;
#[path = "throughput/odm.rs"]
mod odm;
#[path = "throughput/params.rs"]
mod params;
#[path = "throughput/relay.rs"]
mod relay;
#[path = "throughput/render.rs"]
mod render;
#[path = "throughput/report.rs"]
mod report;
#[path = "throughput/report_load.rs"]
mod report_load;
#[path = "throughput/share.rs"]
mod share;
#[path = "throughput/sustained.rs"]
mod sustained;
#[path = "throughput/world.rs"]
mod world;
// The test kit of the integration tests and the chaos suite: the daemon as a child process, the
// queues of a world.
#[path = "../tests/common/kit/mod.rs"]
mod kit;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;

use daemon::Unsupported;
pub use params::Params;
use params::parse_args;

/// A figure, or why there is none.
#[derive(Debug, Serialize)]
#[serde(tag = "status", content = "result", rename_all = "snake_case")]
pub enum Measured<T> {
    Ok(T),
    /// The best configuration is not supported by this build (it exited with code 2 at start).
    Unsupported(String),
    Failed(String),
    /// Not run (`--only`).
    Skipped,
}

impl<T> Measured<T> {
    pub fn from_result(r: Result<T>) -> Self {
        match r {
            Ok(v) => Measured::Ok(v),
            Err(e) => match e.downcast_ref::<Unsupported>() {
                Some(u) => Measured::Unsupported(u.0.clone()),
                None => Measured::Failed(format!("{e:#}")),
            },
        }
    }

    pub fn ok(&self) -> Option<&T> {
        match self {
            Measured::Ok(v) => Some(v),
            _ => None,
        }
    }
}

/// Everything a run measured; `results.json` is this, serialised.
#[derive(Debug, Serialize)]
pub struct Results {
    pub started_utc: String,
    pub finished_utc: String,
    pub wall_seconds: f64,
    pub results_dir: String,
    pub machine: machine::Machine,
    pub params: Params,
    pub dataset: data::Mix,
    pub broker: Measured<broker::Broker>,
    pub db_single: Measured<database::DbRun>,
    pub db_batched: Measured<database::DbRun>,
    pub baseline: Measured<baseline::Baseline>,
    pub e2e_default: Measured<endtoend::EndToEnd>,
    pub e2e_best: Measured<endtoend::EndToEnd>,
    pub fastlane_default: Measured<fastlane::FastLane>,
    pub fastlane_best: Measured<fastlane::FastLane>,
    pub lone_default: Measured<lone::Lone>,
    pub lone_best: Measured<lone::Lone>,
    pub sustained_default: Measured<sustained::Sustained>,
    pub sustained_best: Measured<sustained::Sustained>,
    pub memory_default: Measured<memory::Memory>,
    pub memory_best: Measured<memory::Memory>,
    pub sweep: Vec<endtoend::SweepPoint>,
    pub share: Measured<share::Share>,
    pub before_after: Measured<before::BeforeAfter>,
    pub odm: Measured<odm::Odm>,
    /// The printed table.
    pub rows: Vec<report::Row>,
}

fn main() -> ExitCode {
    let params = match parse_args() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("throughput: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let code = runtime.block_on(async {
        tokio::select! {
            r = run(params) => match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("throughput: {e:#}");
                    world::cleanup_all().await;
                    ExitCode::FAILURE
                }
            },
            _ = tokio::signal::ctrl_c() => {
                eprintln!("[bench] interrupted: stopping the daemon and removing the bench's queues and databases");
                world::cleanup_all().await;
                ExitCode::from(130)
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

fn results_dir(started: &chrono::DateTime<chrono::Utc>) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| world::repo().join("target"));
    let target = if target.is_relative() {
        world::repo().join(target)
    } else {
        target
    };
    target
        .join("bench")
        .join(started.format("%Y%m%dT%H%M%SZ").to_string())
}

async fn run(p: Params) -> Result<()> {
    let started = chrono::Utc::now();
    let clock = std::time::Instant::now();
    let dir = results_dir(&started);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    eprintln!("[bench] results go to {}", dir.display());
    if p.quick {
        eprintln!(
            "[bench] --quick: the large memory backlog is {} messages instead of 1,000,000",
            p.memory_large
        );
    }
    // One build for the whole run, whatever happens to target/ and config/ meanwhile.
    let build = tempfile::Builder::new().prefix("edc-bench-").tempdir()?;
    world::snapshot(build.path())?;
    daemon::probe(p.default)
        .await
        .context("the daemon refuses the default configuration")?;
    cpu::identify_servers().await;
    let mut machine = machine::machine().await;
    eprintln!(
        "[bench] generating and preparing {} DEMO-001 records",
        p.records
    );
    let records = p.records;
    let data = tokio::task::spawn_blocking(move || data::generate(records)).await??;
    let mix = data::mix(&data);
    let (default, best) = (p.default, p.best);
    // A build without `batch_size` or `committers` refuses EDC__BATCH_SIZE or EDC__COMMITTERS
    // (exit code 2): find out once, up front, instead of preloading backlogs for a daemon that
    // cannot start.
    let best_unsupported = match daemon::probe(best).await {
        Ok(()) => None,
        Err(e) => match e.downcast_ref::<Unsupported>() {
            Some(u) => {
                eprintln!(
                    "[bench] best configuration ({}) not supported by this build: {}",
                    best.describe(),
                    u.0
                );
                Some(u.0.clone())
            }
            None => {
                eprintln!("[bench] warning: probing the best configuration: {e:#}");
                None
            }
        },
    };
    let broker = if p.runs("broker") {
        Measured::Ok(broker::run(&data, p.broker_messages, &p.broker_prefetches).await)
    } else {
        Measured::Skipped
    };

    let (mut db_single, mut db_batched) = (Measured::Skipped, Measured::Skipped);
    if p.runs("db") {
        let cap = Duration::from_secs(p.db_cap_seconds);
        let conns = p.db_connections;
        db_single = Measured::from_result(database::run(&data, conns, 1, cap).await);
        db_batched = Measured::from_result(database::run(&data, conns, p.db_batch, cap).await);
    }

    let baseline = if p.runs("baseline") {
        Measured::from_result(baseline::run(&data, p.baseline_messages, &logs).await)
    } else {
        Measured::Skipped
    };

    let (mut e2e_default, mut e2e_best) = (Measured::Skipped, Measured::Skipped);
    if p.runs("e2e") {
        let n = p.e2e_messages;
        e2e_default =
            Measured::from_result(endtoend::run(&data, n, default, &logs, "default").await);
        e2e_best = match &best_unsupported {
            Some(why) => Measured::Unsupported(why.clone()),
            None => Measured::from_result(endtoend::run(&data, n, best, &logs, "best").await),
        };
    }

    let (mut fastlane_default, mut fastlane_best) = (Measured::Skipped, Measured::Skipped);
    if p.runs("fastlane") {
        let (n, k) = (p.fastlane_backlog, p.fastlane_samples);
        fastlane_default =
            Measured::from_result(fastlane::run(&data, n, k, default, &logs, "default").await);
        fastlane_best = match &best_unsupported {
            Some(why) => Measured::Unsupported(why.clone()),
            None => Measured::from_result(fastlane::run(&data, n, k, best, &logs, "best").await),
        };
    }

    let (mut lone_default, mut lone_best) = (Measured::Skipped, Measured::Skipped);
    if p.runs("lone") {
        let k = p.lone_samples;
        lone_default = Measured::from_result(lone::run(&data, k, default, &logs, "default").await);
        lone_best = match &best_unsupported {
            Some(why) => Measured::Unsupported(why.clone()),
            None => Measured::from_result(lone::run(&data, k, best, &logs, "best").await),
        };
    }

    let (mut sustained_default, mut sustained_best) = (Measured::Skipped, Measured::Skipped);
    if p.runs("sustained") {
        let step = Duration::from_secs(p.sustained_step_seconds);
        let rates = &p.sustained_rates;
        sustained_default = Measured::from_result(
            sustained::run(&data, default, rates, step, &logs, "default").await,
        );
        sustained_best = match &best_unsupported {
            Some(why) => Measured::Unsupported(why.clone()),
            None => {
                Measured::from_result(sustained::run(&data, best, rates, step, &logs, "best").await)
            }
        };
    }

    let (mut memory_default, mut memory_best) = (Measured::Skipped, Measured::Skipped);
    if p.runs("memory") {
        let work = Duration::from_secs(p.memory_work_seconds);
        let mut configs = vec![("default", default)];
        if best_unsupported.is_none() {
            configs.push(("best", best));
        }
        let mut m = memory::run(&data, &configs, p.memory_small, p.memory_large, work, &logs)
            .await
            .into_iter();
        memory_default = m.next().unwrap_or(Measured::Skipped);
        memory_best = match &best_unsupported {
            Some(why) => Measured::Unsupported(why.clone()),
            None => m.next().unwrap_or(Measured::Skipped),
        };
    }

    let sweep = if p.runs("sweep") {
        endtoend::sweep(&data, p.sweep_messages, &p.sweep, &logs).await
    } else {
        Vec::new()
    };

    let share = if p.runs("share") {
        Measured::from_result(share::run(&data, p.share_messages, default, &logs).await)
    } else {
        Measured::Skipped
    };

    // Only with --before: an earlier build to compare with.
    let before_after = match (&p.before, p.runs("before")) {
        (Some(bin), true) => Measured::from_result(
            before::run(
                &data,
                p.before_messages,
                p.before_rounds,
                bin,
                default,
                &logs,
            )
            .await,
        ),
        _ => Measured::Skipped,
    };

    let odm = if p.runs("odm") {
        Measured::from_result(odm::run(&data, p.odm_forms, default, &logs).await)
    } else {
        Measured::Skipped
    };

    machine.loadavg_end = machine::loadavg();
    let mut results = Results {
        started_utc: started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        finished_utc: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        wall_seconds: clock.elapsed().as_secs_f64(),
        results_dir: dir.display().to_string(),
        machine,
        params: p,
        dataset: mix,
        broker,
        db_single,
        db_batched,
        baseline,
        e2e_default,
        e2e_best,
        fastlane_default,
        fastlane_best,
        lone_default,
        lone_best,
        sustained_default,
        sustained_best,
        memory_default,
        memory_best,
        sweep,
        share,
        before_after,
        odm,
        rows: Vec::new(),
    };
    results.rows = report::rows(&results);
    let table = render::text(&results);
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(dir.join("results.md"), render::markdown(&results))?;
    std::fs::write(dir.join("sweep.svg"), render::sweep_svg(&results))?;
    println!("{table}");
    println!("results: {}", dir.display());
    Ok(())
}
