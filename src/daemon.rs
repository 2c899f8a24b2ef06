//! The daemon: wires the parts together and runs them until its shutdown token is cancelled. Tests
//! call [`run_with_stats`] directly, with their own settings and token.
//!
//! ```text
//! start  HTTP listener (port taken: exit 2) -> protocols, key (broken: exit 2) -> migrations (waits
//!        for the database) -> pool, committer, settler, workers -> gate prober, outbox relay,
//!        backlog gauges, SIGHUP reloader -> broker supervisor
//! stop   token cancelled (/readyz: 503) -> the supervisor cancels both consumers and gives back what
//!        it still held -> the workers finish their jobs, within shutdown_grace -> what no worker took
//!        is given back -> the committers finish -> acks flushed, connection closed -> the relay ends
//!        its round -> the HTTP listener stops
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::broker::consume::Supervisor;
use crate::broker::publish::Seal;
use crate::broker::{Settler, inbound};
use crate::config::Settings;
use crate::failure::{Failure, runtime};
use crate::http;
use crate::pipeline::Pseudonymizer;
use crate::protocol::Registry;
use crate::relay::Relay;
use crate::stats::{Stats, Summary};
use crate::store::{self, Committer, ConnectError, DbGate, MigrateError, WorkerShare};
use crate::worker::{self, Context, Parts};

/// Runs the daemon until `shutdown` is cancelled; returns the counters.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> Result<Summary, Failure> {
    run_with_stats(settings, shutdown, Arc::new(Stats::default())).await
}

/// As [`run`], counting into `stats` (tests watch it while the daemon runs).
pub async fn run_with_stats(
    settings: Settings,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
) -> Result<Summary, Failure> {
    // First, so that liveness answers while the rest starts (the migrations may wait long).
    let listener = match settings.http.address()? {
        Some(addr) => Some(http::Listener::start(addr, stats.clone()).await?),
        None => None,
    };
    let draining = tokio::spawn({
        let (stats, shutdown) = (stats.clone(), shutdown.clone());
        async move {
            shutdown.cancelled().await;
            stats.health.draining();
        }
    });
    let registry = Registry::open(&settings.studies_dir)?;
    for w in &registry.warnings {
        warn!(warning = %w, "protocol check");
    }
    let pseudonymizer = Pseudonymizer::from_settings(&settings)?;
    info!(settings = %settings.describe(), "starting");
    check_tls_settings(&settings)?;
    if settings.postgres.migrate_on_start {
        migrate_when_reachable(&settings, &shutdown).await?;
    } else {
        info!("migrations are left to `edc-ingest migrate` (postgres.migrate_on_start is off)");
    }
    check_runtime_role(&settings, &shutdown).await?;

    let pool = store::pool(&settings.postgres).map_err(runtime)?;
    // What the pool opens: the committers', the workers' share, the gate's probe and the backlog
    // gauge's; pool_size stays the cap (Settings::pool_connections).
    pool.resize(settings.pool_connections());
    let share = WorkerShare::new(
        pool.clone(),
        settings.postgres.worker_connections,
        settings.postgres.acquire_timeout,
    );
    stats.before_scrape({
        let (pool, gauges) = (pool.clone(), stats.pool.clone());
        move || {
            let status = pool.status();
            gauges
                .in_use
                .set(status.size.saturating_sub(status.available) as i64);
            gauges.idle.set(status.available as i64);
            gauges.waiting.set(status.waiting as i64);
            gauges.size.set(status.max_size as i64);
        }
    });
    let name = consumer_name();
    let gate = Arc::new(DbGate::new(stats.clone()));
    let (committer, committers) = Committer::start(
        pool.clone(),
        share.clone(),
        settings.committers,
        settings.workers,
        pseudonymizer.key_id().to_string(),
        stats.clone(),
    );
    let seal = Seal::new(&pseudonymizer.derive("header seal"));
    let settler = Arc::new(Settler::new(
        settings.amqp.clone(),
        settings.retry.clone(),
        name.clone(),
        stats.clone(),
        seal,
    ));
    let ctx = Arc::new(Context::new(Parts {
        settings: settings.clone(),
        registry,
        pseudonymizer,
        share,
        committer,
        settler: settler.clone(),
        stats: stats.clone(),
        consumer_name: name.clone(),
        gate: gate.clone(),
        shutdown: shutdown.clone(),
    }));

    let prober = tokio::spawn({
        let (gate, pool, shutdown) = (gate.clone(), pool.clone(), shutdown.clone());
        async move { gate.run_prober(pool, shutdown).await }
    });
    let relay = tokio::spawn(
        Relay {
            settings: settings.clone(),
            name: format!("{name} outbox"),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    // Read for /metrics only: not without a listener.
    let backlog = listener.as_ref().map(|_| {
        tokio::spawn(store::backlog::run(
            pool.clone(),
            stats.clone(),
            shutdown.clone(),
        ))
    });
    let reloader = tokio::spawn(reload_on_sighup(ctx.clone()));
    let pruner = store::retention::Horizons::of(&settings.retention).map(|horizons| {
        tokio::spawn(store::retention::every_hour(
            settings.postgres.clone(),
            horizons,
            shutdown.clone(),
        ))
    });

    let (intake, feed) = inbound::feed(settings.batch_size);
    let mut workers = worker::spawn(&ctx, &feed);
    let supervisor = Supervisor {
        settings: settings.clone(),
        gate: gate.subscribe(),
        shutdown: shutdown.clone(),
        stats: stats.clone(),
        settler: settler.clone(),
        name,
    };
    // Returns once shutdown is asked, with intake stopped.
    let session = supervisor.run(intake).await;

    let grace = settings.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            ?grace,
            "shutdown grace ran out; unfinished jobs return to the queue when the channel closes"
        );
        workers.abort_all();
        while workers.join_next().await.is_some() {}
    }
    for d in feed.leftovers().await {
        settler.give_back(d);
    }
    // With the workers and the reloader gone, nothing holds the committers' handle: they answer
    // what they hold and end. One stuck in a statement is not waited for long.
    reloader.abort();
    let _ = reloader.await;
    drop(ctx);
    for mut c in committers {
        if tokio::time::timeout(Duration::from_secs(5), &mut c)
            .await
            .is_err()
        {
            c.abort();
        }
    }
    if let Some(session) = session {
        session.close(settings.amqp.operation_timeout).await;
    }
    prober.abort();
    if let Some(p) = pruner {
        p.abort();
    }
    // The relay finishes its round (it watches the same shutdown token) and closes its connection.
    let _ = relay.await;
    if let Some(backlog) = backlog {
        let _ = backlog.await;
    }
    pool.close();
    draining.abort();
    if let Some(listener) = listener {
        listener.stop().await;
    }
    Ok(stats.summary())
}

/// `host:pid`: names the connections, the consumers and the daemon in dead letters and rejections.
pub fn consumer_name() -> String {
    format!(
        "{}:{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    )
}

/// Migrations need the database; at start-up it may still be coming up, so wait for it (with
/// backoff) rather than exit. A database that refuses us (credentials, TLS, permissions) or a
/// migration that fails is no reason to wait: the start fails with the reason.
async fn migrate_when_reachable(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<(), Failure> {
    let mut wait = Duration::from_millis(200);
    loop {
        match store::migrate(&settings.postgres).await {
            Ok(applied) => {
                if !applied.is_empty() {
                    info!(?applied, "migrations applied");
                }
                return Ok(());
            }
            Err(e @ MigrateError::Connect(ConnectError::Unreachable { .. })) => {
                warn!(error = %e, retry_in = ?wait, "database not ready; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.failure()),
        }
    }
}

/// TLS settings that cannot be used (a file missing or not PEM, a key others can read, a check
/// without its CA, an unknown sslmode) stop the start at once, before anything connects.
fn check_tls_settings(settings: &Settings) -> Result<(), Failure> {
    let pg = &settings.postgres;
    for url in [&pg.url, pg.migration_url()] {
        store::pg_config(url, pg).map_err(|e| Failure::setup(e.to_string()))?;
    }
    if settings
        .amqp
        .url
        .nodes()
        .iter()
        .any(|n| n.starts_with("amqps://"))
    {
        crate::broker::BrokerTls::new(&settings.amqp).map_err(|e| Failure::setup(e.to_string()))?;
    }
    Ok(())
}

/// The daemon's own role (`postgres.url`) must be able to do its work: it connects (a database
/// that refuses it, its credentials or its TLS, stops the start with exit code 2; one not up yet
/// is waited for), and it must hold every privilege `run` uses (see `store::role`). A schema not
/// migrated yet is left to the database gate, which waits for it. A role that owns the evidence or
/// is a superuser stops the start too, unless `postgres.allow_owner_runtime` allows it.
async fn check_runtime_role(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<(), Failure> {
    let pg = &settings.postgres;
    let mut wait = Duration::from_millis(200);
    let db = loop {
        match store::connect(&pg.url, pg).await {
            Ok(db) => break db,
            Err(e @ ConnectError::Unreachable { .. }) => {
                warn!(error = %e, retry_in = ?wait, "database not ready; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(Failure::setup(e.to_string())),
        }
    };
    let identity = store::role::identity(&db).await;
    let checked = store::role::check(&db).await;
    let room = store::role::connection_room(&db).await;
    db.close().await;
    // What this replica opens (Settings::pool_connections, and the relay's) against what the
    // server has left: a warning, since other replicas may be stopping or the pool may never fill.
    let opens = settings.pool_connections() as i64 + 1;
    match room {
        Ok(room) if room < opens => warn!(
            room,
            opens,
            "PostgreSQL accepts {room} more connections now and this replica opens up to {opens} \
             (committers + postgres.worker_connections + 2, and the event relay's): raise \
             max_connections, or lower committers or postgres.worker_connections; a refused \
             connection closes the database gate until one is free"
        ),
        Ok(room) => info!(
            room,
            opens,
            "PostgreSQL connections: this replica opens up to {opens}, the server accepts {room} more now"
        ),
        Err(e) => warn!(error = %e, "could not read how many connections PostgreSQL accepts"),
    }
    match identity.map(|i| i.verdict(pg.allow_owner_runtime)) {
        Ok(store::role::Verdict::Refused(why)) => return Err(Failure::setup(why)),
        Ok(store::role::Verdict::OwnerAllowed(warning)) => warn!("{warning}"),
        Ok(store::role::Verdict::Runs { warnings }) => warnings.iter().for_each(|w| warn!("{w}")),
        Err(e) => warn!(error = %e, "could not check which database role the daemon runs as"),
    }
    match checked {
        Ok(store::role::Check::Ready) => Ok(()),
        Ok(store::role::Check::NotMigrated) => {
            warn!("the schema is not migrated yet; waiting for `edc-ingest migrate`");
            Ok(())
        }
        Ok(store::role::Check::Lacks(lacks)) => Err(Failure::setup(format!(
            "the database role of postgres.url ({}) cannot do the daemon's work; it lacks: {}. \
             Make it a member of the runtime role (postgres.runtime_role `{}`) and run \
             `edc-ingest migrate` as the owner, which grants that role its privileges \
             (README, \"Least privilege\")",
            pg.url,
            lacks.join(", "),
            pg.runtime_role
        ))),
        // The check itself failed (the connection went away): the gate deals with outages.
        Err(e) => {
            warn!(error = %e, "could not check the runtime role's privileges");
            Ok(())
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
