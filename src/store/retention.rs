//! Retention of the data that is not evidence and would otherwise only grow. The evidence (records,
//! audit trail, data queries, alerts, rejections, dead-letter actions) is never touched.
//!
//! The working tables, by `retention.working_tables` (`edc-ingest prune --older-than`):
//! - `duplicates_seen`: the message ids of re-uploads already counted on a receipt. Past the horizon
//!   a re-upload of such an old message would be counted again, so the horizon must be longer than
//!   uploaders keep resending.
//! - `batch_counts`: each database connection counts a batch's outcomes in a row of its own, so a
//!   batch has as many rows as connections stored it. Once a batch completed before the horizon, its
//!   rows are folded into one: the receipt stays exactly as it was.
//! - `delivery_ledger`: the crash count of a redelivered message is removed when the message is
//!   settled; a row left by a message that never came back is removed past the horizon.
//!
//! The events the broker refused for good, by `retention.outbox_parked` (`--parked-older-than`):
//! - `outbox_parked`: no patient identifier, but each is the only copy of an event downstream never
//!   received, so they are kept unless a horizon is set.
//!
//! Every horizon is at least [`MIN_RETENTION`] (one day), here and in the database's function.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{MIN_RETENTION, PostgresSettings, RetentionSettings, show_horizon};

/// What to prune: each part by its own horizon; none: that part is left alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Horizons {
    pub working_tables: Option<Duration>,
    pub outbox_parked: Option<Duration>,
}

impl Horizons {
    /// The horizons the settings give; none if they prune nothing.
    pub fn of(retention: &RetentionSettings) -> Option<Horizons> {
        let h = Horizons {
            working_tables: retention.working_tables,
            outbox_parked: retention.outbox_parked,
        };
        h.any().then_some(h)
    }

    /// Whether anything is to be pruned.
    pub fn any(&self) -> bool {
        self.working_tables.is_some() || self.outbox_parked.is_some()
    }

    /// In words: "working tables older than 30days, outbox_parked older than 90days".
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("working tables", self.working_tables),
            ("outbox_parked", self.outbox_parked),
        ]
        .into_iter()
        .filter_map(|(what, h)| h.map(|h| format!("{what} older than {}", show_horizon(h))))
        .collect();
        parts.join(", ")
    }
}

/// What one pruning removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// The parts pruned.
    pub horizons: Horizons,
    pub duplicates_seen: u64,
    /// Counter rows folded away (the batches keep one row each).
    pub batch_count_rows: u64,
    pub delivery_ledger: u64,
    pub outbox_parked: u64,
}

impl std::fmt::Display for Pruned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.horizons.working_tables.is_some() {
            parts.push(format!(
                "duplicates_seen {} rows, batch_counts {} rows folded, delivery_ledger {} rows",
                self.duplicates_seen, self.batch_count_rows, self.delivery_ledger
            ));
        }
        if self.horizons.outbox_parked.is_some() {
            parts.push(format!("outbox_parked {} rows", self.outbox_parked));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Prunes what is older than its horizon, in one transaction: one call of `prune_working_tables`
/// (V10), which runs as the owner, so the runtime role needs no DELETE on these tables. A horizon
/// under [`MIN_RETENTION`] is refused by the database too (SQLSTATE 22023).
pub async fn prune(
    client: &tokio_postgres::Client,
    horizons: Horizons,
) -> Result<Pruned, tokio_postgres::Error> {
    let seconds = |h: Option<Duration>| h.map(|h| h.as_secs_f64());
    let row = client
        .query_one(
            "SELECT n_duplicates_seen, n_batch_count_rows, n_delivery_ledger, n_outbox_parked
             FROM prune_working_tables($1, $2)",
            &[
                &seconds(horizons.working_tables),
                &seconds(horizons.outbox_parked),
            ],
        )
        .await?;
    let count = |i: usize| row.get::<_, i64>(i) as u64;
    Ok(Pruned {
        horizons,
        duplicates_seen: count(0),
        batch_count_rows: count(1),
        delivery_ledger: count(2),
        outbox_parked: count(3),
    })
}

/// Prunes by `horizons` every hour (and once at start), on a connection of its own, until
/// `shutdown`: `retention.working_tables` and `retention.outbox_parked`.
pub async fn every_hour(pg: PostgresSettings, horizons: Horizons, shutdown: CancellationToken) {
    debug_assert!(
        [horizons.working_tables, horizons.outbox_parked]
            .iter()
            .flatten()
            .all(|h| *h >= MIN_RETENTION)
    );
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let pruned = async {
            let db = super::connect(&pg.url, &pg).await?;
            let pruned = prune(&db.client, horizons).await;
            db.close().await;
            Ok::<_, anyhow::Error>(pruned?)
        };
        match pruned.await {
            Ok(p) => info!(pruned = %p, "pruned by retention.working_tables and outbox_parked"),
            Err(e) => warn!(error = %e, "pruning failed; next try in an hour"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_pruned_names_only_the_parts_asked_for() {
        let day = Duration::from_secs(86_400);
        let both = Pruned {
            horizons: Horizons {
                working_tables: Some(30 * day),
                outbox_parked: Some(90 * day),
            },
            duplicates_seen: 1,
            batch_count_rows: 2,
            delivery_ledger: 3,
            outbox_parked: 4,
        };
        assert_eq!(
            both.to_string(),
            "duplicates_seen 1 rows, batch_counts 2 rows folded, delivery_ledger 3 rows, \
             outbox_parked 4 rows"
        );
        assert_eq!(
            both.horizons.describe(),
            "working tables older than 30days, outbox_parked older than 90days"
        );
        let parked = Pruned {
            horizons: Horizons {
                working_tables: None,
                outbox_parked: Some(day),
            },
            outbox_parked: 2,
            ..Pruned::default()
        };
        assert_eq!(parked.to_string(), "outbox_parked 2 rows");
        assert!(!Horizons::default().any());
    }
}
