//! Memory: the daemon's peak RSS (`VmHWM`, read just before SIGTERM) on a small backlog drained
//! fully, and on a large one it works on for a fixed time. With prefetch bounding what the daemon
//! holds, the two should be about equal.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tokio::time::Instant;

use crate::Measured;
use crate::daemon::{self, Daemon, DaemonConfig, Unsupported};
use crate::data::{self, Message};
use crate::world::World;

#[derive(Clone, Debug, Serialize)]
pub struct RssRun {
    /// Messages in the queue when the daemon started.
    pub backlog: u64,
    /// Messages it gave an outcome while it ran.
    pub processed: i64,
    pub seconds: f64,
    pub drained: bool,
    pub peak_rss_kib: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    pub config: DaemonConfig,
    pub small: RssRun,
    pub large: RssRun,
    /// large / small peak RSS.
    pub ratio: f64,
}

/// For each configuration: a `small` backlog drained fully (fresh world each), then one shared
/// `large` backlog, topped up to `large` messages before each configuration works on it for `work`.
pub async fn run(
    data: &[Message],
    configs: &[(&str, DaemonConfig)],
    small: usize,
    large: usize,
    work: Duration,
    logs: &Path,
) -> Vec<Measured<Memory>> {
    let mut smalls = Vec::new();
    for (label, config) in configs {
        let r = small_run(
            data,
            *config,
            small,
            &logs.join(format!("memory-small-{label}.log")),
        )
        .await;
        if let Ok(s) = &r {
            eprintln!(
                "[bench] memory {label}: peak RSS {:.1} MiB after draining {small} messages",
                s.peak_rss_kib as f64 / 1024.0
            );
        }
        smalls.push(r);
    }
    let larges = large_runs(data, configs, &smalls, large, work, logs).await;
    smalls
        .into_iter()
        .zip(larges)
        .zip(configs)
        .map(|((s, l), (_, config))| {
            Measured::from_result(s.and_then(|small| {
                let large = l?;
                Ok(Memory {
                    config: *config,
                    ratio: large.peak_rss_kib as f64 / small.peak_rss_kib.max(1) as f64,
                    small,
                    large,
                })
            }))
        })
        .collect()
}

async fn small_run(data: &[Message], config: DaemonConfig, n: usize, log: &Path) -> Result<RssRun> {
    let world = World::full("mem").await?;
    let result = async {
        data::preload(&world, data, n, false).await?;
        let d = daemon::drain(&world, config, n as u64, Duration::from_secs(300), log).await?;
        Ok(RssRun {
            backlog: n as u64,
            processed: n as i64,
            seconds: d.seconds,
            drained: true,
            peak_rss_kib: d.peak_rss_kib,
        })
    }
    .await;
    world.cleanup().await;
    result
}

async fn large_runs(
    data: &[Message],
    configs: &[(&str, DaemonConfig)],
    smalls: &[Result<RssRun>],
    n: usize,
    work: Duration,
    logs: &Path,
) -> Vec<Result<RssRun>> {
    let world = match World::full("memlarge").await {
        Ok(w) => w,
        Err(e) => {
            let msg = format!("{e:#}");
            return configs
                .iter()
                .map(|_| Err(anyhow::anyhow!("{msg}")))
                .collect();
        }
    };
    let mut out = Vec::new();
    let mut published = 0u64;
    for ((label, config), small) in configs.iter().zip(smalls) {
        if let Err(e) = small
            && let Some(u) = e.downcast_ref::<Unsupported>()
        {
            out.push(Err(Unsupported(u.0.clone()).into()));
            continue;
        }
        let log = logs.join(format!("memory-large-{label}.log"));
        let r = large_run(&world, data, *config, n, &mut published, work, &log).await;
        if let Ok(l) = &r {
            eprintln!(
                "[bench] memory {label}: peak RSS {:.1} MiB after {:.0} s on a {} backlog ({} processed)",
                l.peak_rss_kib as f64 / 1024.0,
                l.seconds,
                l.backlog,
                l.processed
            );
        }
        out.push(r);
    }
    world.cleanup().await;
    out
}

async fn large_run(
    world: &World,
    data: &[Message],
    config: DaemonConfig,
    n: usize,
    published: &mut u64,
    work: Duration,
    log: &Path,
) -> Result<RssRun> {
    let db = world.db().await?;
    let (s, r) = daemon::outcomes_exact(&db).await?;
    let before = s + r;
    // Top the queue up to `n` waiting messages (each with a new record id).
    let waiting = *published - before as u64;
    let top_up = (n as u64).saturating_sub(waiting) as usize;
    if top_up > 0 {
        eprintln!("[bench] memory: publishing a backlog of {top_up} messages");
        let p = data::preload(world, data, top_up, true).await?;
        eprintln!("[bench] memory: published at {:.0} msg/s", p.rate);
        *published += top_up as u64;
    }
    let backlog = *published - before as u64;
    let mut daemon = Daemon::start(world, config, log)?;
    let result = async {
        let deadline = daemon.started + work;
        let mut drained = false;
        while Instant::now() < deadline {
            daemon.check_alive()?;
            if daemon::outcomes_estimate(&db).await? >= *published as i64 {
                drained = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seconds = daemon.started.elapsed().as_secs_f64();
        let peak_rss_kib = daemon.peak_rss_kib()?;
        Ok::<_, anyhow::Error>((drained, seconds, peak_rss_kib))
    }
    .await;
    daemon.stop().await?;
    let (drained, seconds, peak_rss_kib) = result?;
    let (s, r) = daemon::outcomes_exact(&db).await?;
    Ok(RssRun {
        backlog,
        processed: s + r - before,
        seconds,
        drained,
        peak_rss_kib,
    })
}
