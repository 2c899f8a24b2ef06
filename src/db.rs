//! The PostgreSQL side: the connection pool and the schema migrations.
//!
//! The pool is built from a `tokio_postgres::Config` parsed from the URL, not from deadpool's own
//! `Config`, whose `Debug` output would print the password.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::{PostgresSettings, SecretUrl};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory-lock key held while migrating, so replicas starting together migrate once.
const MIGRATION_LOCK: i64 = 0x6564_635f_6d69_6772; // "edc_migr"

pub fn pg_config(
    url: &SecretUrl,
    connect_timeout: Duration,
) -> anyhow::Result<tokio_postgres::Config> {
    let mut cfg: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|_| anyhow::anyhow!("postgres.url is not a valid PostgreSQL URL: {url}"))?;
    cfg.connect_timeout(connect_timeout);
    cfg.application_name("edc-ingest");
    Ok(cfg)
}

pub fn pool(settings: &PostgresSettings) -> anyhow::Result<Pool> {
    let cfg = pg_config(&settings.url, settings.connect_timeout)?;
    let manager = Manager::from_config(
        cfg,
        NoTls,
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

/// Applies pending migrations on a dedicated connection, under an advisory lock. Returns the names of
/// the migrations applied now.
pub async fn migrate(settings: &PostgresSettings) -> anyhow::Result<Vec<String>> {
    let cfg = pg_config(&settings.url, settings.connect_timeout)?;
    let (mut client, connection) = cfg
        .connect(NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL at {}: {e}", settings.url))?;
    let conn = tokio::spawn(connection);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = embedded::migrations::runner()
        .set_grouped(false)
        .run_async(&mut client)
        .await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    drop(client);
    let _ = conn.await;
    let report = report.map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}
