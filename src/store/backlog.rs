//! The gauges that need a query: `edc_outbox_backlog`, `edc_relay_lag_seconds` and
//! `edc_batches_open`, read on a timer.
//!
//! On a timer rather than at scrape time: what a scrape costs then never depends on the database,
//! and however many scrapers there are (several Prometheus replicas, someone's `curl` loop), the
//! database sees one small query per period per daemon. The values are at most one period old, which
//! is finer than any scrape interval worth using for a backlog. The query borrows a pool connection
//! for about a millisecond; when the database is unreachable the old values stay and nothing waits
//! longer than `postgres.acquire_timeout`.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::stats::Stats;

/// How often the gauges are read.
pub const PERIOD: Duration = Duration::from_secs(5);

/// Rows waiting in the outbox; the age of the oldest (by id, which is commit order within a
/// transaction and creation order across them), 0 with none; batches still waiting for outcomes.
/// Each part reads an index: the outbox's primary key, and `batches_open`, which is partial on
/// `completed_at IS NULL`.
const QUERY: &str = "SELECT
    (SELECT count(*) FROM outbox),
    COALESCE((SELECT extract(epoch FROM now() - created_at)::float8 FROM outbox ORDER BY id LIMIT 1), 0),
    (SELECT count(*) FROM batches WHERE completed_at IS NULL AND expected IS NOT NULL)";

/// Reads the gauges every [`PERIOD`] until `shutdown`.
pub async fn run(pool: Pool, stats: Arc<Stats>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = refresh(&pool, &stats).await {
            debug!(error = %e, "could not read the outbox and batch gauges; keeping the last values");
        }
    }
}

async fn refresh(pool: &Pool, stats: &Stats) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let row = client.query_one(QUERY, &[]).await?;
    stats.outbox_backlog.set(row.get(0));
    stats.relay_lag.set(row.get::<_, f64>(1).max(0.0));
    stats.batches_open.set(row.get(2));
    Ok(())
}
