//! A fair share between replicas: two daemons of one configuration started together on one
//! preloaded backlog, each one's part of the messages read from its summary line (the outcomes it
//! settled: accepted, queried, duplicate, dead-lettered). With the prefetch equal to the workers,
//! the broker gives each consumer as many deliveries as it has free workers, so neither replica
//! should take the backlog while the other waits.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::daemon::{self, Daemon, DaemonConfig};
use crate::data::{self, Message};
use crate::world::World;

#[derive(Clone, Debug, Serialize)]
pub struct Share {
    pub config: DaemonConfig,
    pub messages: u64,
    /// From the first daemon's start until every message had its outcome.
    pub seconds: f64,
    pub rate: f64,
    /// Messages each replica settled.
    pub parts: [u64; 2],
    /// The smaller part over the whole: 0.5 is an even share.
    pub smaller: f64,
    /// The most connections both held at once (pool and relay of each).
    pub peak_connections: i64,
}

pub async fn run(
    data: &[Message],
    messages: usize,
    config: DaemonConfig,
    logs: &Path,
) -> Result<Share> {
    let world = World::full("share").await?;
    let result = async {
        data::preload(&world, data, messages, false).await?;
        let db = world.db().await?;
        let log = [logs.join("share-1.log"), logs.join("share-2.log")];
        let mut one = Daemon::start(&world, config, &log[0])?;
        let mut two = match Daemon::start(&world, config, &log[1]) {
            Ok(d) => d,
            Err(e) => {
                one.stop().await?;
                return Err(e);
            }
        };
        let n = messages as u64;
        let timeout = Duration::from_secs(60 + n / 500);
        let done = daemon::wait_outcomes(&db, &mut one, n, timeout).await;
        let other = two.check_alive();
        let started = one.started;
        one.stop().await?;
        two.stop().await?;
        let done = done?;
        other?;
        let part = |log: &Path| -> Result<u64> {
            ["accepted", "queried", "duplicate", "dead_lettered"]
                .iter()
                .map(|k| {
                    daemon::summary_count(log, k).with_context(|| {
                        format!("no {k}= in the summary line of {}", log.display())
                    })
                })
                .sum()
        };
        let parts = [part(&log[0])?, part(&log[1])?];
        let seconds = (done.at - started).as_secs_f64();
        Ok(Share {
            config,
            messages: n,
            seconds,
            rate: n as f64 / seconds,
            parts,
            smaller: parts[0].min(parts[1]) as f64 / (parts[0] + parts[1]).max(1) as f64,
            peak_connections: done.peak_connections,
        })
    }
    .await;
    world.cleanup().await;
    if let Ok(s) = &result {
        eprintln!(
            "[bench] fair share ({}): {} and {} of {} messages ({:.1} % the smaller), {:.0} records/s together, {} connections at most",
            config.describe(),
            s.parts[0],
            s.parts[1],
            s.messages,
            s.smaller * 100.0,
            s.rate,
            s.peak_connections
        );
    }
    result
}
