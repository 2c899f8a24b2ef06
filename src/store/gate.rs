//! The database gate: one shared view of whether PostgreSQL is usable.
//!
//! A worker that meets an outage closes the gate. While it is closed the consumer is cancelled (no
//! new deliveries), jobs already delivered go straight back to the queue without touching the
//! database, and a single prober checks the database with backoff; it opens the gate when the
//! database answers, can be written to (not a standby) and lets the daemon's role do its work (no
//! privilege revoked, the schema migrated), and consumption resumes. Nothing is dead-lettered for an
//! outage and nothing is held unacked while it lasts.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::role::{self, Check};
use crate::stats::Stats;

pub struct DbGate {
    open: watch::Sender<bool>,
    /// Told of every change: readiness, `edc_db_gate_open` and the time spent closed.
    stats: Arc<Stats>,
}

impl DbGate {
    /// An open gate.
    pub fn new(stats: Arc<Stats>) -> DbGate {
        stats.health.gate(true);
        DbGate {
            open: watch::Sender::new(true),
            stats,
        }
    }

    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Closes the gate; logs once per outage.
    pub fn close(&self, reason: &str) {
        if self.open.send_replace(false) {
            self.stats.health.gate(false);
            warn!(%reason, "database unavailable: pausing consumption until it answers");
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.open.subscribe()
    }

    /// Probes the database whenever the gate is closed, with capped exponential backoff, and opens
    /// the gate when a connection from the pool answers, on a primary, with every privilege the
    /// daemon needs. Runs until `shutdown`.
    pub async fn run_prober(&self, pool: Pool, shutdown: CancellationToken) {
        let mut rx = self.subscribe();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = rx.wait_for(|open| !open) => if changed.is_err() { return },
            }
            let mut wait = Duration::from_millis(100);
            let started = tokio::time::Instant::now();
            loop {
                let probe = async {
                    let client = pool.get().await.map_err(|e| e.to_string())?;
                    // A standby (after a failover) answers queries but cannot store anything.
                    let row = client
                        .query_one("SELECT pg_is_in_recovery()", &[])
                        .await
                        .map_err(|e| e.to_string())?;
                    if row.get::<_, bool>(0) {
                        return Err("the database is a read-only standby".to_string());
                    }
                    // A database that answers but refuses our statements (a privilege revoked, a
                    // migration not or half applied) is not usable either: reopening would only
                    // fail the next records again.
                    match role::check(&client).await.map_err(|e| e.to_string())? {
                        Check::Ready => Ok(()),
                        Check::NotMigrated => Err("the schema is not (fully) migrated".to_string()),
                        Check::Lacks(lacks) => Err(format!(
                            "the daemon's role lacks {} (`edc-ingest migrate` as the owner grants them again)",
                            lacks.join(", ")
                        )),
                    }
                };
                match tokio::time::timeout(Duration::from_secs(5), probe).await {
                    Ok(Ok(())) => {
                        self.open.send_replace(true);
                        self.stats.health.gate(true);
                        info!(down_for = ?started.elapsed(), "database answers again: resuming consumption");
                        break;
                    }
                    Ok(Err(e)) => {
                        warn!(error = %first_line(&e), retry_in = ?wait, "database still unavailable")
                    }
                    Err(_) => warn!(retry_in = ?wait, "database probe timed out"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_is_seen_by_subscribers_once_and_an_outage_logs_once() {
        let gate = DbGate::new(Arc::new(Stats::new()));
        let mut seen = gate.subscribe();
        assert!(gate.is_open() && *seen.borrow_and_update());
        gate.close("connection refused");
        gate.close("connection refused again");
        assert!(!gate.is_open());
        assert!(seen.has_changed().unwrap());
        assert!(!*seen.borrow_and_update());
        assert!(
            !seen.has_changed().unwrap(),
            "a second close changes nothing"
        );
    }

    #[tokio::test]
    async fn the_prober_keeps_the_gate_closed_while_nothing_answers_and_ends_at_shutdown() {
        // A database address nothing listens on.
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = unused.local_addr().unwrap().port();
        drop(unused);
        let settings = crate::config::Settings::load_with_env(
            None,
            vec![(
                "EDC__POSTGRES__URL".to_string(),
                format!("postgres://edc:edc@127.0.0.1:{port}/edc"),
            )],
        )
        .unwrap();
        let pool = crate::store::pool(&settings.postgres).unwrap();
        let gate = Arc::new(DbGate::new(Arc::new(Stats::new())));
        let shutdown = CancellationToken::new();
        let prober = tokio::spawn({
            let (gate, shutdown) = (gate.clone(), shutdown.clone());
            async move { gate.run_prober(pool, shutdown).await }
        });
        gate.close("connection refused");
        // A few probes go by (100, 200, 400 ms apart): none opens the gate.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!gate.is_open());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), prober)
            .await
            .expect("the prober ends at shutdown")
            .unwrap();
    }
}
