//! Wiring: builds the shared [`Context`] from settings and runs the daemon until its shutdown token
//! is cancelled. Tests call [`run`] directly with their own settings and token.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::gate::DbGate;
use crate::pipeline::Pseudonymizer;
use crate::protocol::Registry;
use crate::stats::{Stats, Summary};
use crate::{consumer, db, outbox};

/// What every worker shares.
pub struct Context {
    pub settings: Settings,
    registry: RwLock<Arc<Registry>>,
    pub pseudonymizer: Pseudonymizer,
    pub pool: Pool,
    pub stats: Arc<Stats>,
    /// `host:pid`, written into dead letters and rejections.
    pub consumer_name: String,
    /// `host:pid/random`: this process start, for the crash ledger (a restarted container may get
    /// the same pid).
    pub instance: String,
    /// Whether the database is usable; closed during outages (see [`crate::gate`]).
    pub gate: DbGate,
    /// Redelivered messages take it exclusively, everything else shares it (see [`crate::worker`]).
    pub isolation: tokio::sync::RwLock<()>,
    pub shutdown: CancellationToken,
}

impl Context {
    /// The protocols in force now.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().expect("registry lock").clone()
    }

    /// Loads the protocol files again (SIGHUP). A set with any error is refused whole, with a clear
    /// log line, and the protocols in force stay.
    pub fn reload_protocols(&self) -> Result<(), String> {
        match Registry::load(&self.settings.studies_dir) {
            Ok(registry) => {
                let versions = describe(&registry);
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

/// `DEMO-001 v2.1 (3 forms), ...`, sorted.
pub fn describe(registry: &Registry) -> String {
    let mut all: Vec<String> = registry
        .studies()
        .map(|p| {
            let from = p
                .effective_from
                .map(|d| format!(" from {d}"))
                .unwrap_or_default();
            let to = p
                .effective_to
                .map(|d| format!(" to {d}"))
                .unwrap_or_default();
            format!(
                "{} v{}{from}{to} ({} forms)",
                p.study,
                p.version,
                p.forms.len()
            )
        })
        .collect();
    all.sort();
    all.join(", ")
}

/// Start-up problems that are the operator's to fix (exit code 2), as opposed to runtime failures.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

pub fn load_pseudonymizer(settings: &Settings) -> Result<Pseudonymizer, SetupError> {
    if let Some(key) = &settings.pseudonym_key {
        return Pseudonymizer::new(key.expose().as_bytes())
            .map_err(|e| SetupError(format!("pseudonym_key: {e}")));
    }
    if let Some(path) = &settings.pseudonym_key_file {
        return Pseudonymizer::from_file(path).map_err(SetupError);
    }
    if settings.dev_insecure_pseudonym_key {
        warn!(
            "using the built-in INSECURE development pseudonymisation key: pseudonyms protect nothing"
        );
        return Ok(Pseudonymizer::insecure_dev());
    }
    Err(SetupError("no pseudonymisation key configured".into()))
}

pub fn load_registry(dir: &Path) -> Result<Registry, SetupError> {
    Registry::load(dir).map_err(|e| SetupError(format!("study protocols are invalid:\n{e}")))
}

pub fn consumer_name() -> String {
    format!(
        "{}:{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    )
}

/// Runs the daemon until `shutdown` is cancelled; returns the counters.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Summary> {
    run_with_stats(settings, shutdown, Arc::new(Stats::default())).await
}

/// As [`run`], counting into `stats` (tests watch it while the daemon runs).
pub async fn run_with_stats(
    settings: Settings,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
) -> anyhow::Result<Summary> {
    let registry = load_registry(&settings.studies_dir)?;
    for w in &registry.warnings {
        warn!(warning = %w, "protocol check");
    }
    let pseudonymizer = load_pseudonymizer(&settings)?;
    info!(settings = %settings.describe(), "starting");
    migrate_when_reachable(&settings, &shutdown).await?;
    let pool = db::pool(&settings.postgres)?;
    let name = consumer_name();
    let ctx = Arc::new(Context {
        registry: RwLock::new(Arc::new(registry)),
        pseudonymizer,
        pool: pool.clone(),
        stats: stats.clone(),
        instance: format!("{name}/{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        consumer_name: name,
        gate: DbGate::default(),
        isolation: tokio::sync::RwLock::new(()),
        shutdown,
        settings,
    });
    let prober = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            ctx.gate
                .run_prober(ctx.pool.clone(), ctx.shutdown.clone())
                .await
        })
    };
    let relay = tokio::spawn(outbox::run(ctx.clone()));
    let reloader = tokio::spawn(reload_on_sighup(ctx.clone()));
    consumer::run(ctx).await;
    prober.abort();
    reloader.abort();
    // The relay finishes its round (it watches the same shutdown token) and closes its connection.
    let _ = relay.await;
    pool.close();
    Ok(stats.summary())
}

/// Migrations need the database; at start-up it may still be coming up, so wait for it (with
/// backoff) rather than exit.
async fn migrate_when_reachable(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut wait = Duration::from_millis(200);
    loop {
        match db::migrate(&settings.postgres).await {
            Ok(applied) => {
                if !applied.is_empty() {
                    info!(?applied, "migrations applied");
                }
                return Ok(());
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?wait, "database not ready; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// SIGHUP: reload the protocol files without a restart.
async fn reload_on_sighup(ctx: Arc<Context>) {
    use futures::StreamExt;
    let Ok(mut signals) = signal_hook_tokio::Signals::new([signal_hook::consts::SIGHUP]) else {
        warn!("cannot listen for SIGHUP; protocol reloads need a restart");
        return;
    };
    while signals.next().await.is_some() {
        info!("SIGHUP: reloading the protocol files");
        let _ = ctx.reload_protocols();
    }
}
