//! The PostgreSQL side: connections, the schema, and everything written there.
//!
//! - [`ingest`]: the one call that stores records (with their audit rows, data queries, alerts,
//!   events and receipts), the rejection rows and the duplicate notes; [`Stored`] is what it says.
//! - [`committer`]: group commit. The workers hand their prepared records to it, and it stores
//!   whatever is ready at that moment with one statement, one transaction.
//! - [`error`]: every database error classified once, by SQLSTATE, into what the worker does next.
//! - [`crash`]: the crash count of redelivered messages.
//! - [`gate`]: whether the database is usable; consumption pauses while it is not.
//! - [`retention`]: pruning of the working tables that would otherwise only grow.
//! - [`backlog`]: the outbox backlog, the relay lag and the open batches, read for `/metrics`.
//! - [`role`]: the runtime role's grants, and whether the daemon's role can do its work.
//! - [`tls`]: TLS with libpq's `sslmode` semantics, a default that never leaves a connection over
//!   the network unverified by omission, and channel binding for a password sent over TLS.
//!
//! Connections come from here only: the pool ([`pool`]) for the daemon's work, a dedicated
//! connection ([`connect`]) for the relay, the migrations and the command-line tools. The pool is
//! built from a `tokio_postgres::Config` parsed from the URL, not from deadpool's own `Config`,
//! whose `Debug` output would print the password.

pub mod backlog;
pub mod committer;
pub mod crash;
pub mod error;
pub mod gate;
pub mod ingest;
pub mod odm;
pub mod retention;
pub mod role;
pub mod share;
pub mod tls;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tracing::{info, warn};

use crate::config::{PostgresSettings, SecretUrl};

pub use committer::Committer;
pub use error::{ConnectError, MigrateError, PersistError};
pub use gate::DbGate;
pub use ingest::Stored;
pub use share::WorkerShare;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory-lock key held while migrating, so replicas starting together migrate once.
pub const MIGRATION_LOCK: i64 = 0x6564_635f_6d69_6772; // "edc_migr"

/// The connection settings of `url`, with the daemon's timeouts: every session it opens has
/// `statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout` set, so the server
/// ends what a job that gave up left running; and `postgres.dead_peers` on both ends (the socket's
/// keepalives and `TCP_USER_TIMEOUT`, the backend's `tcp_keepalives_*`, `tcp_user_timeout` and
/// `client_connection_check_interval`), so that either side gives up on a peer that vanished
/// without a word within tens of seconds, and the server drops a dead client's locks. With them,
/// the TLS connector that checks what the URL's `sslmode` (or the default) asks for (see [`tls`]).
/// A URL or TLS setting that cannot be used is `Refused`.
pub fn pg_config(
    url: &SecretUrl,
    settings: &PostgresSettings,
) -> Result<(tokio_postgres::Config, tls::MakeRustls), ConnectError> {
    configured(url, settings).map(|(cfg, connector, _)| (cfg, connector))
}

/// [`pg_config`], with what its TLS leaves unchecked ([`tls::Tls::weakness`]).
fn configured(
    url: &SecretUrl,
    settings: &PostgresSettings,
) -> Result<(tokio_postgres::Config, tls::MakeRustls, Option<String>), ConnectError> {
    let refused = |why: String| ConnectError::Refused {
        at: url.to_string(),
        why,
    };
    let not_valid = || refused("not a valid PostgreSQL URL or connection string".into());
    let (text, params) = tls::split_tls_params(url.expose()).ok_or_else(not_valid)?;
    let mut cfg: tokio_postgres::Config = text.parse().map_err(|_| not_valid())?;
    let tls = tls::Tls::new(&params, &settings.tls, &cfg).map_err(|e| refused(e.to_string()))?;
    let connector = tls.apply(&mut cfg);
    cfg.connect_timeout(settings.connect_timeout);
    cfg.application_name("edc-ingest");
    let peers = &settings.dead_peers;
    cfg.keepalives(true)
        .keepalives_idle(peers.keepalives_idle)
        .keepalives_interval(peers.keepalives_interval)
        .keepalives_retries(peers.keepalives_count)
        .tcp_user_timeout(peers.tcp_user_timeout);
    let ms = |d: Duration| d.as_millis();
    let mut options = cfg.get_options().map(str::to_string).unwrap_or_default();
    options.push_str(&format!(
        " -c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
        ms(settings.statement_timeout),
        ms(settings.lock_timeout),
        ms(settings.idle_in_transaction_timeout)
    ));
    options.push_str(&format!(
        " -c tcp_keepalives_idle={} -c tcp_keepalives_interval={} -c tcp_keepalives_count={} -c tcp_user_timeout={}",
        peers.keepalives_idle.as_secs(),
        peers.keepalives_interval.as_secs(),
        peers.keepalives_count,
        ms(peers.tcp_user_timeout)
    ));
    if !NO_CHECK_INTERVAL.load(Ordering::Relaxed) {
        options.push_str(&format!(
            " -c {CHECK_INTERVAL}={}",
            ms(peers.client_connection_check_interval)
        ));
    }
    cfg.options(options.trim());
    Ok((cfg, connector, tls.weakness()))
}

/// The server setting PostgreSQL 13 and older do not have.
const CHECK_INTERVAL: &str = "client_connection_check_interval";

/// Set once a server refused [`CHECK_INTERVAL`] (an unknown setting ends the connection at once):
/// every later connection of the process goes without it.
static NO_CHECK_INTERVAL: AtomicBool = AtomicBool::new(false);

/// Logs, as a warning and once per process, what the connections of `url` leave unchecked, if
/// they are below `verify-ca`: at the daemon's start (its pool) and at `migrate`. The one-shot
/// tools do not repeat it on every call.
fn warn_if_weak(url: &SecretUrl, weakness: Option<String>) {
    let Some(weakness) = weakness else {
        return;
    };
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let shown = url.to_string();
    let first = SEEN
        .lock()
        .map(|mut seen| seen.insert(shown.clone()))
        .unwrap_or(true);
    if first {
        warn!(url = %shown, "PostgreSQL connection not fully protected: {weakness}");
    }
}

pub fn pool(settings: &PostgresSettings) -> anyhow::Result<Pool> {
    let (cfg, tls, weakness) = configured(&settings.url, settings)?;
    warn_if_weak(&settings.url, weakness);
    let manager = Manager::from_config(
        cfg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(settings.connect_timeout))
        .build()?)
}

/// A connection of its own, outside the pool, whose I/O runs on a task of its own. The task ends
/// when the client is dropped.
pub async fn connect(
    url: &SecretUrl,
    settings: &PostgresSettings,
) -> Result<Connected, ConnectError> {
    let (cfg, tls) = pg_config(url, settings)?;
    let (client, connection) = match cfg.connect(tls).await {
        Err(e) if names_check_interval(&e) && !NO_CHECK_INTERVAL.swap(true, Ordering::Relaxed) => {
            info!(
                "the server has no {CHECK_INTERVAL} (PostgreSQL 13 or older): connecting without it"
            );
            let (cfg, tls) = pg_config(url, settings)?;
            cfg.connect(tls).await
        }
        other => other,
    }
    .map_err(|e| refused_by_client(ConnectError::of(url.to_string(), &e), &e))?;
    let io = tokio::spawn(connection);
    Ok(Connected { client, io })
}

/// The server's answer to a setting it does not know, naming [`CHECK_INTERVAL`].
fn names_check_interval(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        db.code() == &tokio_postgres::error::SqlState::UNDEFINED_OBJECT
            && db.message().contains(CHECK_INTERVAL)
    })
}

/// A connection that tokio-postgres itself refused to complete, before any password left (the
/// server asked for it without the channel binding the settings require, or in a way it does not
/// support), is the settings' or the server's to change: refused, not waited for.
fn refused_by_client(classified: ConnectError, e: &tokio_postgres::Error) -> ConnectError {
    let text = e.to_string();
    match classified {
        ConnectError::Unreachable { at, why }
            if e.as_db_error().is_none()
                && (text.starts_with("authentication error")
                    || text.starts_with("invalid configuration")) =>
        {
            ConnectError::Refused { at, why }
        }
        other => other,
    }
}

/// A dedicated connection: the client and the task that drives its I/O.
pub struct Connected {
    pub client: tokio_postgres::Client,
    io: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl Connected {
    /// Closes the connection and waits for its I/O task to finish.
    pub async fn close(self) {
        drop(self.client);
        let _ = self.io.await;
    }

    /// Drops a connection taken as dead without waiting for it: its I/O task would wait for the
    /// answers still owed, for as long as TCP takes to give up. The socket is closed at once.
    pub fn abandon(self) {
        self.io.abort();
    }
}

impl std::ops::Deref for Connected {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &tokio_postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for Connected {
    fn deref_mut(&mut self) -> &mut tokio_postgres::Client {
        &mut self.client
    }
}

/// Applies pending migrations as the owner role (`postgres.migrate_url`, else `postgres.url`), on a
/// dedicated connection, under an advisory lock so that replicas starting together migrate once.
/// Waits at most `postgres.migration_lock_timeout` for another replica's migrations. Returns the
/// names of the migrations applied now.
pub async fn migrate(settings: &PostgresSettings) -> Result<Vec<String>, MigrateError> {
    let url = settings.migration_url();
    warn_if_weak(url, configured(url, settings)?.2);
    let mut conn = connect(url, settings).await?;
    let lost = |e: tokio_postgres::Error| MigrateError::from(ConnectError::of(url.to_string(), &e));
    // A migration may take longer than a job's statement; only the wait for the lock is bounded.
    let lock_wait = format!(
        "SET statement_timeout = 0; SET lock_timeout = {}",
        settings.migration_lock_timeout.as_millis()
    );
    conn.batch_execute(&lock_wait).await.map_err(lost)?;
    if let Err(e) = conn
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
    {
        return Err(match e.code() {
            Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                MigrateError::LockTimeout(settings.migration_lock_timeout)
            }
            _ => lost(e),
        });
    }
    conn.batch_execute("SET lock_timeout = 0")
        .await
        .map_err(lost)?;
    let report = embedded::migrations::runner()
        .set_grouped(false)
        .run_async(&mut conn.client)
        .await;
    // The runtime role's grants, every time (see V9): a role created since is granted now.
    let granted = match &report {
        Ok(_) => role::grant(&conn, &settings.runtime_role)
            .await
            .map_err(|e| MigrateError::Failed(format!("granting the runtime role: {e}"))),
        Err(_) => Ok(()),
    };
    let _ = conn
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    conn.close().await;
    let report = report.map_err(|e| MigrateError::Failed(e.to_string()))?;
    granted?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// Runs a database operation; contention (a lost race with another transaction) is retried at once
/// a few times, with a short backoff, while `deadline` allows. Everything else goes to the caller.
pub async fn with_retries<T, F, Fut>(
    deadline: tokio::time::Instant,
    mut op: F,
) -> Result<T, PersistError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PersistError>>,
{
    let mut wait = Duration::from_millis(10);
    for _ in 0..4 {
        match op().await {
            Err(PersistError::Contention(e)) => {
                if tokio::time::Instant::now() + wait >= deadline {
                    return Err(PersistError::Contention(e));
                }
                tracing::debug!(error = %e, retry_in = ?wait, "database contention; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    op().await
}
