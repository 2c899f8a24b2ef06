//! Before and after, in one run: the same backlog drained by an earlier build (`--before PATH`, a
//! daemon binary; `scripts/bench.sh --before REV` builds one from a commit) and by this build, in
//! alternating rounds (before first in odd rounds, after first in even ones), each drain on a
//! fresh world that its own binary migrated. The drains of one run share the machine's state, so
//! the medians of each side can be compared; figures of two separate runs vary far more (BENCHMARKS.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::daemon::{self, DaemonConfig, Drain};
use crate::data::{self, Message};
use crate::world::World;

#[derive(Clone, Debug, Serialize)]
pub struct BeforeAfter {
    pub config: DaemonConfig,
    pub messages: usize,
    /// The earlier build's binary, as given.
    pub before_binary: String,
    pub before: Vec<Drain>,
    pub after: Vec<Drain>,
}

/// The median of each side's figure.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Medians {
    pub rate: f64,
    pub daemon_us: f64,
    pub postgres_us: f64,
    pub broker_us: f64,
    pub machine_us: f64,
    /// The daemon's context switches a record (NaN where `/proc` did not show them).
    pub switches: f64,
}

impl BeforeAfter {
    pub fn medians(drains: &[Drain]) -> Medians {
        let median = |f: fn(&Drain) -> f64| {
            let mut v: Vec<f64> = drains.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            match v.len() {
                0 => f64::NAN,
                n if n % 2 == 1 => v[n / 2],
                n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
            }
        };
        Medians {
            rate: median(|d| d.rate),
            daemon_us: median(|d| d.cpu_us_per_record),
            postgres_us: median(|d| d.postgres_cpu_us_per_record),
            broker_us: median(|d| d.broker_cpu_us_per_record),
            machine_us: median(|d| d.machine_cpu_us_per_record),
            switches: median(|d| d.switches_per_record.unwrap_or(f64::NAN)),
        }
    }
}

pub async fn run(
    data: &[Message],
    messages: usize,
    rounds: usize,
    before_bin: &Path,
    config: DaemonConfig,
    logs: &Path,
) -> Result<BeforeAfter> {
    if !before_bin.is_file() {
        bail!("--before {}: no such file", before_bin.display());
    }
    // A copy, as for this build (see `world::snapshot`): a rebuild during the run changes nothing.
    let before_copy = logs.join("edc-ingest-before");
    std::fs::copy(before_bin, &before_copy)
        .with_context(|| format!("copying {}", before_bin.display()))?;
    let after_bin: PathBuf = crate::world::binary();
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let order = if round % 2 == 1 {
            [("before", &before_copy), ("after", &after_bin)]
        } else {
            [("after", &after_bin), ("before", &before_copy)]
        };
        for (side, bin) in order {
            let label = format!("{side}-{round}");
            let drain = one(
                data,
                messages,
                bin,
                config,
                &logs.join(format!("{label}.log")),
            )
            .await?;
            eprintln!(
                "[bench] before/after, round {round}, {side}: {:.0} records/s, {:.1} us daemon CPU, {:.1} us PostgreSQL, {:.1} us machine a record, {:.2} daemon context switches a record",
                drain.rate,
                drain.cpu_us_per_record,
                drain.postgres_cpu_us_per_record,
                drain.machine_cpu_us_per_record,
                drain.switches_per_record.unwrap_or(f64::NAN)
            );
            match side {
                "before" => before.push(drain),
                _ => after.push(drain),
            }
        }
    }
    Ok(BeforeAfter {
        config,
        messages,
        before_binary: before_bin.display().to_string(),
        before,
        after,
    })
}

/// One drain of `bin` on a fresh world it migrated itself.
async fn one(
    data: &[Message],
    messages: usize,
    bin: &Path,
    config: DaemonConfig,
    log: &Path,
) -> Result<Drain> {
    let world = World::unmigrated("before").await?;
    let result = async {
        let mut migrate = daemon::launch(bin, "edc-ingest migrate")
            .args(["migrate"])
            .envs(world.env())
            .try_spawn()
            .context("starting edc-ingest migrate")?;
        match migrate.exit_within(Duration::from_secs(60)).await {
            Some(status) if status.success() => {}
            Some(status) => bail!(
                "{} migrate failed ({status}): {}",
                bin.display(),
                migrate.stderr().trim()
            ),
            None => bail!("{} migrate took over 60 s", bin.display()),
        }
        data::preload(&world, data, messages, false).await?;
        let timeout = Duration::from_secs(60 + messages as u64 / 200);
        daemon::drain_build(&world, bin, config, messages as u64, timeout, log).await
    }
    .await;
    world.cleanup().await;
    result
}
