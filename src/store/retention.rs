//! Retention of the working tables that would otherwise only grow. The evidence (records, audit
//! trail, data queries, alerts, rejections, dead-letter actions) is never touched.
//!
//! - `duplicates_seen`: the message ids of re-uploads already counted on a receipt. Past the horizon
//!   a re-upload of such an old message would be counted again, so the horizon must be longer than
//!   uploaders keep resending.
//! - `batch_counts`: each database connection counts a batch's outcomes in a row of its own, so a
//!   batch has as many rows as connections stored it. Once a batch completed before the horizon, its
//!   rows are folded into one: the receipt stays exactly as it was.
//! - `delivery_ledger`: the crash count of a redelivered message is removed when the message is
//!   settled; a row left by a message that never came back is removed past the horizon.

use std::time::Duration;

/// What one pruning removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub duplicates_seen: u64,
    /// Counter rows folded away (the batches keep one row each).
    pub batch_count_rows: u64,
    pub delivery_ledger: u64,
}

impl std::fmt::Display for Pruned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "duplicates_seen {} rows, batch_counts {} rows folded, delivery_ledger {} rows",
            self.duplicates_seen, self.batch_count_rows, self.delivery_ledger
        )
    }
}

/// Prunes what is older than `horizon`, in one transaction: one call of `prune_working_tables`
/// (V9), which runs as the owner, so the runtime role needs no DELETE on these tables.
pub async fn prune(
    client: &mut tokio_postgres::Client,
    horizon: Duration,
) -> Result<Pruned, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT n_duplicates_seen, n_batch_count_rows, n_delivery_ledger
             FROM prune_working_tables($1)",
            &[&horizon.as_secs_f64()],
        )
        .await?;
    let count = |i: usize| row.get::<_, i64>(i) as u64;
    Ok(Pruned {
        duplicates_seen: count(0),
        batch_count_rows: count(1),
        delivery_ledger: count(2),
    })
}
