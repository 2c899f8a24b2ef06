//! The worker side: a fixed set of workers, each taking deliveries from the [`Feed`] and carrying
//! them to their settlement.
//!
//! ```text
//! Feed ──> worker (one of N) ──> job::run: prepare (pure) ──> committer (group commit) ──> fate
//!                                                                              ──> Settler::settle
//! ```
//! [`job`] runs a group of deliveries (one, or up to `batch_size` already waiting), [`fate`] turns
//! what storing them came to into each delivery's [`crate::broker::Fate`].

pub mod fate;
pub mod job;
pub mod odm;

use std::sync::{Arc, RwLock};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::broker::{Feed, Settler};
use crate::config::Settings;
use crate::pipeline::Pseudonymizer;
use crate::protocol::Registry;
use crate::stats::Stats;
use crate::store::{Committer, DbGate, WorkerShare};

/// What every worker shares.
pub struct Context {
    pub settings: Settings,
    registry: RwLock<Arc<Registry>>,
    pub pseudonymizer: Pseudonymizer,
    /// For the statements a worker runs itself: rejection rows, crash counts, duplicate notes, ODM
    /// messages (at most `postgres.worker_connections` at once, see [`WorkerShare`]).
    pub share: WorkerShare,
    /// Stores prepared records, many to a transaction.
    pub committer: Committer,
    pub settler: Arc<Settler>,
    pub stats: Arc<Stats>,
    /// `host:pid`, written into rejections.
    pub consumer_name: String,
    /// `host:pid/random`: this process start, for the crash count (a restarted container may get
    /// the same pid).
    pub instance: String,
    /// Whether the database is usable; closed during outages (see [`crate::store::gate`]).
    pub gate: Arc<DbGate>,
    /// Redelivered messages take it exclusively, everything else shares it (see [`job`]).
    pub isolation: tokio::sync::RwLock<()>,
    pub shutdown: CancellationToken,
}

/// The parts of a [`Context`] that are not built from others.
pub struct Parts {
    pub settings: Settings,
    pub registry: Registry,
    pub pseudonymizer: Pseudonymizer,
    pub share: WorkerShare,
    pub committer: Committer,
    pub settler: Arc<Settler>,
    pub stats: Arc<Stats>,
    pub consumer_name: String,
    pub gate: Arc<DbGate>,
    pub shutdown: CancellationToken,
}

impl Context {
    pub fn new(p: Parts) -> Context {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Context {
            instance: format!("{}/{}", p.consumer_name, &suffix[..8]),
            settings: p.settings,
            registry: RwLock::new(Arc::new(p.registry)),
            pseudonymizer: p.pseudonymizer,
            share: p.share,
            committer: p.committer,
            settler: p.settler,
            stats: p.stats,
            consumer_name: p.consumer_name,
            gate: p.gate,
            isolation: tokio::sync::RwLock::new(()),
            shutdown: p.shutdown,
        }
    }

    /// The protocols in force now.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().expect("registry lock").clone()
    }

    /// Loads the protocol files again (SIGHUP). A set with any error is refused whole, with a clear
    /// log line, and the protocols in force stay.
    pub fn reload_protocols(&self) -> Result<(), String> {
        match Registry::load(&self.settings.studies_dir) {
            Ok(registry) => {
                let versions = registry.describe();
                for w in &registry.warnings {
                    warn!(warning = %w, "protocol check");
                }
                *self.registry.write().expect("registry lock") = Arc::new(registry);
                info!(%versions, "protocols reloaded");
                Ok(())
            }
            Err(problems) => {
                error!(problems = %problems.replace('\n', "; "), "protocol reload refused: the protocols in force stay");
                Err(problems)
            }
        }
    }
}

/// Starts the fixed worker set. Each worker runs until shutdown is asked or the feed closes, and
/// always finishes the group it holds.
///
/// Metrics: `edc_workers` (configured), `edc_workers_busy` and `edc_job_duration_seconds` (a job:
/// from taking the group to the outcome of its last delivery). A worker loop that ends before
/// shutdown (a panic outside a job's own guard) is reported to liveness.
pub fn spawn(ctx: &Arc<Context>, feed: &Feed) -> JoinSet<()> {
    let mut workers = JoinSet::new();
    ctx.stats.workers.set(ctx.settings.workers as i64);
    for _ in 0..ctx.settings.workers {
        let (ctx, feed) = (ctx.clone(), feed.clone());
        workers.spawn(async move {
            let _watch = WorkerWatch(&ctx);
            while let Some(group) = feed.next(&ctx.shutdown).await {
                let _busy = ctx.stats.worker_busy();
                let started = std::time::Instant::now();
                job::run(&ctx, group).await;
                ctx.stats
                    .job_duration
                    .observe(started.elapsed().as_secs_f64());
            }
        });
    }
    workers
}

/// Tells liveness when a worker loop ends before shutdown (it is dropped on a panic too).
struct WorkerWatch<'a>(&'a Context);

impl Drop for WorkerWatch<'_> {
    fn drop(&mut self) {
        if !self.0.shutdown.is_cancelled() {
            self.0.stats.health.worker_lost();
        }
    }
}
