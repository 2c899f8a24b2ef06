//! The real daemon binary (release build, `CARGO_BIN_EXE_edc-ingest`) as a child process, started
//! and stopped with the test kit (`tests/common/kit`): started with `EDC__*` variables, watched
//! through `/proc/<pid>` (CPU time, peak RSS), stopped with SIGTERM. Also the wait for "every
//! message has its outcome" and a whole backlog drain.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use crate::cpu::{CpuSample, stat_cpu_seconds};
use crate::kit::process::{DaemonProcess, Launch, Signal};
use crate::world::World;

/// The settings a run varies.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct DaemonConfig {
    pub workers: usize,
    pub pool_size: usize,
    pub batch_size: usize,
    /// Committer tasks (group commit); the daemon's own default is 2.
    pub committers: usize,
}

impl DaemonConfig {
    /// The default configuration (config/default.yaml), the shape of the deployment card: workers
    /// 128, pool 128, batch 1, committers 1.
    pub const DEFAULT: DaemonConfig = DaemonConfig {
        workers: 128,
        pool_size: 128,
        batch_size: 1,
        committers: DEFAULT_COMMITTERS,
    };

    /// The broker prefetch the daemon applies: workers x batch_size.
    pub fn prefetch(&self) -> usize {
        self.workers * self.batch_size
    }

    /// The most PostgreSQL connections the daemon opens with this configuration: the pool's (one
    /// per committer, the workers' share, the gate's probe, the backlog gauge; at most pool_size)
    /// and the outbox relay's (`Settings::pool_connections` plus one).
    pub fn connections_cap(&self) -> usize {
        (self.committers + DEFAULT_WORKER_CONNECTIONS + 2).min(self.pool_size) + 1
    }

    pub fn describe(&self) -> String {
        format!(
            "workers {}, pool {}, batch {}, committers {}",
            self.workers, self.pool_size, self.batch_size, self.committers
        )
    }

    /// `EDC__BATCH_SIZE` is passed only when it is not 1, and `EDC__COMMITTERS` only when it is not
    /// the daemon's default 2: a build without the setting refuses the unknown key (exit code 2),
    /// and the default configuration must run on every build.
    fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("EDC__WORKERS".to_string(), self.workers.to_string()),
            (
                "EDC__POSTGRES__POOL_SIZE".to_string(),
                self.pool_size.to_string(),
            ),
        ];
        if self.batch_size != 1 {
            v.push(("EDC__BATCH_SIZE".into(), self.batch_size.to_string()));
        }
        if self.committers != DEFAULT_COMMITTERS {
            v.push(("EDC__COMMITTERS".into(), self.committers.to_string()));
        }
        v
    }
}

/// The daemon's own default number of committer tasks (config/default.yaml).
pub const DEFAULT_COMMITTERS: usize = 1;

/// The daemon's own default `postgres.worker_connections` (config/default.yaml).
pub const DEFAULT_WORKER_CONNECTIONS: usize = 4;

/// The build under test does not accept this configuration (it exited with code 2 at start).
#[derive(Debug)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not supported by this build: {}", self.0)
    }
}

impl std::error::Error for Unsupported {}

pub struct Daemon {
    process: DaemonProcess,
    pid: u32,
    pub started: Instant,
    config: DaemonConfig,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon on `world`; its stdout and stderr go to `log`.
    pub fn start(world: &World, config: DaemonConfig, log: &Path) -> Result<Daemon> {
        Self::start_build(world, &crate::world::binary(), config, log)
    }

    /// [`Daemon::start`] with another build's binary.
    pub fn start_build(
        world: &World,
        bin: &Path,
        config: DaemonConfig,
        log: &Path,
    ) -> Result<Daemon> {
        let started = Instant::now();
        let process = launch(bin, "edc-ingest")
            .args(["run"])
            .envs(world.env())
            .envs(config.env())
            .output_to(log, log)
            .try_spawn()
            .with_context(|| format!("starting the edc-ingest binary (log {})", log.display()))?;
        let pid = process.pid();
        Ok(Daemon {
            process,
            pid,
            started,
            config,
            log: log.to_path_buf(),
        })
    }

    /// Fails if the daemon has exited. Exit code 2 over `batch_size` or `committers` means the build
    /// does not know the setting: [`Unsupported`].
    pub fn check_alive(&mut self) -> Result<()> {
        let Some(status) = self.process.exited() else {
            return Ok(());
        };
        let tail = log_tail(&self.log);
        let output = std::fs::read_to_string(&self.log).unwrap_or_default();
        if config_refused(status.code(), self.config, &output) {
            return Err(Unsupported(format!(
                "edc-ingest exited with code 2 at start ({}): {tail}",
                self.config.describe()
            ))
            .into());
        }
        bail!("edc-ingest exited unexpectedly ({status}): {tail}")
    }

    /// User plus system CPU time so far, in seconds (`/proc/<pid>/stat` fields 14 and 15).
    pub fn cpu_seconds(&self) -> Result<f64> {
        let path = PathBuf::from(format!("/proc/{}/stat", self.pid));
        stat_cpu_seconds(&path).with_context(|| format!("no CPU times in {}", path.display()))
    }

    /// Context switches so far, summed over the daemon's live threads (a thread that has ended
    /// is not counted); None if `/proc` does not show them.
    pub fn context_switches(&self) -> Option<u64> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid)).ok()?;
        let mut total = 0;
        for task in tasks.flatten() {
            let status = std::fs::read_to_string(task.path().join("status")).ok()?;
            total += context_switches(&status)?;
        }
        Some(total)
    }

    /// Peak resident set size (`VmHWM` in `/proc/<pid>/status`), in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        vm_hwm_kib(&status).context("no VmHWM in /proc status")
    }

    /// SIGTERM, then up to 40 s for the graceful stop (SIGKILL after that).
    pub async fn stop(mut self) -> Result<()> {
        if self.process.exited().is_some() {
            return Ok(());
        }
        let _ = self.process.try_signal(Signal::Term);
        match self.process.exit_within(Duration::from_secs(40)).await {
            Some(status) => {
                if !status.success() {
                    eprintln!(
                        "[bench] warning: edc-ingest stopped with {status}: {}",
                        log_tail(&self.log)
                    );
                }
            }
            // Dropping the process kills it.
            None => {
                eprintln!("[bench] warning: edc-ingest did not stop within 40 s of SIGTERM; killed")
            }
        }
        Ok(())
    }
}

/// The binary under test, run from the repository, with none of the caller's `EDC__*` variables
/// or `RUST_LOG`: nothing from the caller's shell may change the configuration under test.
pub fn launch(bin: &Path, name: &str) -> Launch {
    Launch::new(bin)
        .name(name)
        .current_dir(crate::world::repo())
        .inherit_env(|k| !k.starts_with("EDC__") && k != "RUST_LOG")
}

/// Exit code 2 (a configuration error) about `batch_size` or `committers` while the configuration
/// sets it: the build does not have the setting. Any other configuration error is a failure to
/// report, not a missing feature.
fn config_refused(code: Option<i32>, config: DaemonConfig, output: &str) -> bool {
    code == Some(2)
        && ((config.batch_size != 1 && output.contains("batch_size"))
            || (config.committers != DEFAULT_COMMITTERS && output.contains("committers")))
}

/// Whether this build accepts `config`: runs `edc-ingest check-config` with its variables (no
/// connection is made). Exit code 2 over a setting the build lacks is [`Unsupported`].
pub async fn probe(config: DaemonConfig) -> Result<()> {
    let mut check = launch(&crate::world::binary(), "edc-ingest check-config")
        .args(["check-config"])
        .envs([
            (
                "EDC__STUDIES_DIR",
                crate::world::studies_dir().display().to_string(),
            ),
            ("EDC__DEV_INSECURE_PSEUDONYM_KEY", "true".into()),
            ("EDC__LOG__LEVEL", "error".into()),
        ])
        .envs(config.env())
        .try_spawn()
        .context("starting edc-ingest check-config")?;
    let Some(status) = check.exit_within(Duration::from_secs(30)).await else {
        bail!("edc-ingest check-config took over 30 s");
    };
    if status.success() {
        return Ok(());
    }
    let text = check.stderr().trim().to_string();
    if config_refused(status.code(), config, &text) {
        return Err(Unsupported(format!(
            "edc-ingest check-config exited with code 2 ({}): {text}",
            config.describe()
        ))
        .into());
    }
    bail!("edc-ingest check-config failed ({status}): {text}")
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
    if tail.is_empty() {
        format!("(no output; log {})", path.display())
    } else {
        tail
    }
}

/// Messages with an outcome: stored records plus rejections. Cheap form: the identity columns of
/// `audit_trail` (one row per stored record) and `rejections` (an index lookup each, not a scan); a
/// rolled-back insert can leave a gap, so a target reached this way is confirmed with exact counts.
pub async fn outcomes_estimate(db: &tokio_postgres::Client) -> Result<i64> {
    Ok(db
        .query_one(
            "SELECT (SELECT coalesce(max(id), 0) FROM audit_trail)
                  + (SELECT coalesce(max(id), 0) FROM rejections)",
            &[],
        )
        .await?
        .get(0))
}

/// Exact counts: (stored records, rejections).
pub async fn outcomes_exact(db: &tokio_postgres::Client) -> Result<(i64, i64)> {
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM crf_records), (SELECT count(*) FROM rejections)",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// When every message had its outcome, and the most connections the daemon held meanwhile.
#[derive(Clone, Copy, Debug)]
pub struct Outcomes {
    pub at: Instant,
    pub peak_connections: i64,
}

/// Connections to this client's database other than its own (`pg_stat_activity`): in a world of its
/// own, the daemon's.
pub async fn connections(db: &tokio_postgres::Client) -> Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await?
        .get(0))
}

/// Polls every 50 ms until `n` messages have their outcome; fails if the daemon exits or `timeout`
/// passes. Returns when it was seen, with the most connections seen on the way.
pub async fn wait_outcomes(
    db: &tokio_postgres::Client,
    daemon: &mut Daemon,
    n: u64,
    timeout: Duration,
) -> Result<Outcomes> {
    let deadline = Instant::now() + timeout;
    let n = n as i64;
    let mut exact = false;
    let mut peak_connections = 0;
    loop {
        peak_connections = peak_connections.max(connections(db).await?);
        // The moment is taken once the (cheap) count answered: conservative by one query.
        let (reached, seen) = if exact {
            let (s, r) = outcomes_exact(db).await?;
            (s + r >= n, Instant::now())
        } else if outcomes_estimate(db).await? >= n {
            let seen = Instant::now();
            let (s, r) = outcomes_exact(db).await?;
            // Gaps in the identity columns: count exactly from now on.
            exact = s + r < n;
            (!exact, seen)
        } else {
            (false, Instant::now())
        };
        if reached {
            return Ok(Outcomes {
                at: seen,
                peak_connections,
            });
        }
        daemon.check_alive()?;
        if seen >= deadline {
            let (s, r) = outcomes_exact(db).await?;
            bail!(
                "timed out after {timeout:?}: {} of {n} messages have an outcome",
                s + r
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the daemon consumes from its queue (or fails to start).
pub async fn wait_consuming(world: &World, daemon: &mut Daemon, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        daemon.check_alive()?;
        if world.ready().await?.1 > 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the daemon did not start consuming within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A backlog drained by the daemon.
#[derive(Clone, Debug, Serialize)]
pub struct Drain {
    pub config: DaemonConfig,
    pub messages: u64,
    /// From the daemon's start until every message had its outcome.
    pub seconds: f64,
    pub rate: f64,
    /// utime + stime of the daemon, read just before SIGTERM.
    pub cpu_seconds: f64,
    pub cpu_us_per_record: f64,
    /// CPU per record of the broker, of PostgreSQL and of the whole machine during the drain.
    pub broker_cpu_us_per_record: f64,
    pub postgres_cpu_us_per_record: f64,
    pub machine_cpu_us_per_record: f64,
    pub peak_rss_kib: u64,
    /// The most connections to the world's database PostgreSQL showed at once during the drain,
    /// the bench's own poller left out: the daemon's pool and its outbox relay.
    pub peak_connections: i64,
    pub stored: i64,
    pub rejected: i64,
    /// Ack frames the daemon sent per message (its summary line's `acks=`; one `multiple` ack
    /// settles many deliveries). None if the build does not count them.
    pub acks_per_record: Option<f64>,
    /// Context switches of all the daemon's threads per message (`voluntary_ctxt_switches` plus
    /// `nonvoluntary_ctxt_switches` of each `/proc/<pid>/task/*/status`, read just before
    /// SIGTERM): how often a thread gave up its core, mostly to wait for the next hand-off.
    pub switches_per_record: Option<f64>,
}

/// Starts the daemon on a preloaded backlog of `n` messages and measures until all have their
/// outcome. The daemon is always stopped.
pub async fn drain(
    world: &World,
    config: DaemonConfig,
    n: u64,
    timeout: Duration,
    log: &Path,
) -> Result<Drain> {
    drain_build(world, &crate::world::binary(), config, n, timeout, log).await
}

/// [`drain`] with another build's binary.
pub async fn drain_build(
    world: &World,
    bin: &Path,
    config: DaemonConfig,
    n: u64,
    timeout: Duration,
    log: &Path,
) -> Result<Drain> {
    let db = world.db().await?;
    let before = CpuSample::now();
    let mut daemon = Daemon::start_build(world, bin, config, log)?;
    let done = match wait_outcomes(&db, &mut daemon, n, timeout).await {
        Ok(seen) => seen,
        Err(e) => {
            daemon.stop().await?;
            return Err(e);
        }
    };
    let seconds = (done.at - daemon.started).as_secs_f64();
    let cpu_seconds = daemon.cpu_seconds()?;
    let switches = daemon.context_switches();
    let after = CpuSample::now();
    let peak_rss_kib = daemon.peak_rss_kib()?;
    let log_file = daemon.log.clone();
    daemon.stop().await?;
    let acks_per_record = acks_sent(&log_file).map(|a| a as f64 / n as f64);
    let (stored, rejected) = outcomes_exact(&db).await?;
    if stored + rejected != n as i64 {
        bail!(
            "{n} messages gave {stored} stored + {rejected} rejected = {} outcomes",
            stored + rejected
        );
    }
    Ok(Drain {
        config,
        messages: n,
        seconds,
        rate: n as f64 / seconds,
        cpu_seconds,
        cpu_us_per_record: cpu_seconds * 1e6 / n as f64,
        broker_cpu_us_per_record: (after.broker - before.broker) * 1e6 / n as f64,
        postgres_cpu_us_per_record: (after.postgres - before.postgres) * 1e6 / n as f64,
        machine_cpu_us_per_record: (after.machine - before.machine) * 1e6 / n as f64,
        peak_rss_kib,
        peak_connections: done.peak_connections,
        stored,
        rejected,
        acks_per_record,
        switches_per_record: switches.map(|s| s as f64 / n as f64),
    })
}

/// Voluntary plus involuntary context switches of a `/proc/<pid>/task/<tid>/status` text.
fn context_switches(status: &str) -> Option<u64> {
    Some(
        status_field(status, "voluntary_ctxt_switches:")?
            + status_field(status, "nonvoluntary_ctxt_switches:")?,
    )
}

/// The number after `name` in a `/proc` status text (`VmHWM:   1234 kB` gives 1234).
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `VmHWM` of a `/proc/<pid>/status` text, in KiB.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status_field(status, "VmHWM:")
}

/// The `acks=` count of the last summary line in a daemon's log.
fn acks_sent(log: &Path) -> Option<u64> {
    summary_count(log, "acks")
}

/// A count (`name=N`) of the last summary line in a daemon's log.
pub fn summary_count(log: &Path, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    let summary = text.lines().rev().find(|l| l.contains(" acks="))?;
    summary::summary_field(summary, name)
}

#[path = "../../tests/common/summary.rs"]
mod summary;
