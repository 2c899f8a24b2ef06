//! The command line of the bench and the sizes and settings of a run.

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::daemon::{self, DaemonConfig};
use crate::data;

const STAGES: [&str; 12] = [
    "broker",
    "db",
    "baseline",
    "e2e",
    "fastlane",
    "lone",
    "sustained",
    "memory",
    "sweep",
    "share",
    "odm",
    "before",
];

/// Sizes and settings of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    pub quick: bool,
    pub stages: Vec<String>,
    pub records: usize,
    pub seed: u64,
    pub invalid_ratio: f64,
    pub queried_ratio: f64,
    pub default: DaemonConfig,
    pub best: DaemonConfig,
    pub broker_messages: usize,
    pub broker_prefetches: Vec<u16>,
    pub db_connections: usize,
    pub db_batch: usize,
    pub db_cap_seconds: u64,
    pub baseline_messages: usize,
    pub e2e_messages: usize,
    pub fastlane_backlog: usize,
    pub fastlane_samples: usize,
    pub lone_samples: usize,
    pub sustained_rates: Vec<u64>,
    pub sustained_step_seconds: u64,
    pub memory_small: usize,
    pub memory_large: usize,
    pub memory_work_seconds: u64,
    /// The configurations the sweep drains, each on a fresh world: workers = pool for a range of
    /// worker counts (batch 1, the default committers), then other committers and batch sizes.
    pub sweep: Vec<DaemonConfig>,
    pub sweep_messages: usize,
    /// The backlog two replicas of the default configuration share.
    pub share_messages: usize,
    /// Forms of the ODM stage's generated file (and JSON records drained beside them).
    pub odm_forms: usize,
    /// An earlier build's daemon binary: the before/after stage drains the default configuration
    /// with it and with this build, `before_rounds` times each, `before_messages` a drain.
    pub before: Option<std::path::PathBuf>,
    pub before_rounds: usize,
    pub before_messages: usize,
}

impl Params {
    pub fn new(quick: bool, best: DaemonConfig, stages: Vec<String>) -> Params {
        let default = DaemonConfig::DEFAULT;
        let mut prefetches = vec![default.prefetch() as u16, best.prefetch() as u16];
        prefetches.dedup();
        Params {
            quick,
            stages,
            records: 100_000,
            seed: data::SEED,
            invalid_ratio: data::INVALID_RATIO,
            queried_ratio: data::QUERIED_RATIO,
            default,
            best,
            broker_messages: 50_000,
            broker_prefetches: prefetches,
            db_connections: 16,
            db_batch: 64,
            db_cap_seconds: 120,
            // The end-to-end stage's backlog: the same records.
            baseline_messages: 100_000,
            e2e_messages: 100_000,
            fastlane_backlog: 20_000,
            fastlane_samples: 10,
            lone_samples: 20,
            // From 1,000/s, so that a configuration slower than 2,000/s has a rate to report.
            sustained_rates: vec![
                1_000, 2_000, 4_000, 6_000, 8_000, 10_000, 12_000, 15_000, 18_000,
            ],
            sustained_step_seconds: 10,
            memory_small: 10_000,
            memory_large: if quick { 200_000 } else { 1_000_000 },
            memory_work_seconds: 30,
            sweep: default_sweep(),
            sweep_messages: 30_000,
            share_messages: 40_000,
            odm_forms: if quick { 10_000 } else { 50_000 },
            before: None,
            before_rounds: 3,
            before_messages: 60_000,
        }
    }

    pub fn runs(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }
}

/// Workers = pool from 4 to 256 (batch 1, one committer), then two committers and batches of 16 and
/// 64 at the sizes where they could pay.
fn default_sweep() -> Vec<DaemonConfig> {
    let plain = |w: usize, c: usize, b: usize| DaemonConfig {
        workers: w,
        pool_size: w,
        batch_size: b,
        committers: c,
    };
    let mut configs: Vec<DaemonConfig> = [4, 8, 16, 32, 64, 128, 256]
        .into_iter()
        .map(|w| plain(w, daemon::DEFAULT_COMMITTERS, 1))
        .collect();
    configs.extend([
        plain(64, 2, 1),
        plain(128, 2, 1),
        plain(16, 1, 16),
        plain(16, 1, 64),
        plain(64, 1, 16),
    ]);
    configs
}

/// `W,P,B,C` (or `W,P,B`, committers 1): one daemon configuration, checked for the card's limits.
fn config_arg(v: &str, what: &str) -> Result<DaemonConfig> {
    let n: Vec<usize> = v
        .split(',')
        .map(|x| x.trim().parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{what} needs three or four numbers: W,P,B[,C], not `{v}`"))?;
    let (workers, pool_size, batch_size, committers) = match n[..] {
        [w, p, b] => (w, p, b, daemon::DEFAULT_COMMITTERS),
        [w, p, b, c] => (w, p, b, c),
        _ => bail!("{what} needs three or four numbers: W,P,B[,C], not `{v}`"),
    };
    anyhow::ensure!(
        workers >= 1
            && workers <= pool_size
            && batch_size >= 1
            && committers >= 1
            && committers <= pool_size,
        "{what}: need 1 <= workers <= pool_size, batch_size >= 1 and 1 <= committers <= pool_size"
    );
    Ok(DaemonConfig {
        workers,
        pool_size,
        batch_size,
        committers,
    })
}

const USAGE: &str = "\
usage: cargo bench --bench throughput -- [--quick] [--only STAGE,...] [--best W,P,B[,C]]
                                          [--sweep W,P,B[,C]/...] [--sweep-messages N]
                                          [--before PATH] [--before-rounds N]
  --quick            the large memory backlog is 200,000 messages instead of 1,000,000
  --only STAGES      run only these of: broker,db,baseline,e2e,fastlane,lone,sustained,memory,sweep,
                     share,odm,before
  --best W,P,B[,C]   the best configuration: workers, pool_size, batch_size and committers
                     (committers 1 unless given)
  --sweep LIST       the configurations the sweep drains, separated by /
                     (default workers = pool 4..256, then two committers and batches of 16 and 64)
  --sweep-messages N the backlog each configuration of the sweep drains (default 30,000)
  --before PATH      an earlier build's daemon binary: the before/after stage drains 60,000
                     messages with the default configuration, with it and with this build, in
                     alternating rounds (scripts/bench.sh --before REV builds it from a commit)
  --before-rounds N  rounds of the before/after stage (default 3)
environment: EDC_TEST_AMQP_URL, EDC_TEST_PG_URL, EDC_TEST_MANAGEMENT_PORT (scripts/services.sh env);
  EDC_BENCH_DAEMON=PATH runs another daemon binary (the schema and the publisher stay this build's);
  EDC_BENCH_PYTHON=PATH the Python with aio-pika and asyncpg for the baseline (scripts/bench.sh sets
  it; default target/bench-venv/bin/python)";

pub fn parse_args() -> Result<Params> {
    let mut quick = false;
    let mut stages: Vec<String> = STAGES.iter().map(|s| s.to_string()).collect();
    let mut best = DaemonConfig {
        workers: 64,
        pool_size: 64,
        batch_size: 8,
        committers: daemon::DEFAULT_COMMITTERS,
    };
    let mut sweep = None;
    let mut sweep_messages = None;
    let (mut before, mut before_rounds) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--only" => {
                let list = args.next().context("--only needs a list of stages")?;
                stages = list.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = stages.iter().find(|s| !STAGES.contains(&s.as_str())) {
                    bail!("unknown stage `{bad}`; stages are {}", STAGES.join(","));
                }
            }
            "--best" => {
                let v = args.next().context("--best needs W,P,B[,C]")?;
                best = config_arg(&v, "--best")?;
            }
            "--sweep" => {
                let v = args
                    .next()
                    .context("--sweep needs W,P,B[,C]/W,P,B[,C]/...")?;
                sweep = Some(
                    v.split('/')
                        .map(|c| config_arg(c, "--sweep"))
                        .collect::<Result<Vec<_>>>()?,
                );
            }
            "--sweep-messages" => {
                let v = args.next().context("--sweep-messages needs a number")?;
                sweep_messages = Some(v.parse().context("--sweep-messages needs a number")?);
            }
            "--before" => {
                let v = args.next().context("--before needs a daemon binary")?;
                before = Some(std::path::PathBuf::from(v));
            }
            "--before-rounds" => {
                let v = args.next().context("--before-rounds needs a number")?;
                let n: usize = v.parse().context("--before-rounds needs a number")?;
                before_rounds = Some(n.max(1));
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    let mut params = Params::new(quick, best, stages);
    if let Some(sweep) = sweep {
        params.sweep = sweep;
    }
    if let Some(n) = sweep_messages {
        params.sweep_messages = n;
    }
    params.before = before;
    if let Some(n) = before_rounds {
        params.before_rounds = n;
    }
    Ok(params)
}
