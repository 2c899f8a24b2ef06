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

/// Prunes what is older than `horizon`, in one transaction.
pub async fn prune(
    client: &mut tokio_postgres::Client,
    horizon: Duration,
) -> Result<Pruned, tokio_postgres::Error> {
    let seconds = horizon.as_secs_f64();
    let tx = client.transaction().await?;
    let duplicates_seen = tx
        .execute(
            "DELETE FROM duplicates_seen WHERE seen_at < now() - make_interval(secs => $1)",
            &[&seconds],
        )
        .await?;
    // Fold each old completed batch's counter rows into one (shard 0), summing every count: read
    // the sums, remove the rows, write the one row back.
    let sums = tx
        .query(
            "SELECT c.batch_id, sum(c.accepted)::int, sum(c.queried)::int, sum(c.duplicates)::int,
                    coalesce((SELECT jsonb_object_agg(k, n) FROM (
                        SELECT e.key AS k, sum(e.value::integer) AS n
                        FROM batch_counts c2, jsonb_each_text(c2.dead_lettered) e
                        WHERE c2.batch_id = c.batch_id GROUP BY e.key) d), '{}'::jsonb)::text,
                    sum(c.dead_lettered_total)::int, max(c.updated_at), count(*)
             FROM batch_counts c JOIN batches b USING (batch_id)
             WHERE b.completed_at < now() - make_interval(secs => $1)
             GROUP BY c.batch_id HAVING count(*) > 1",
            &[&seconds],
        )
        .await?;
    let mut batch_count_rows = 0;
    for row in &sums {
        let batch: uuid::Uuid = row.get(0);
        tx.execute("DELETE FROM batch_counts WHERE batch_id = $1", &[&batch])
            .await?;
        tx.execute(
            "INSERT INTO batch_counts (batch_id, shard, accepted, queried, duplicates, dead_lettered,
                                       dead_lettered_total, updated_at)
             VALUES ($1, 0, $2, $3, $4, $5::text::jsonb, $6, $7)",
            &[
                &batch,
                &row.get::<_, i32>(1),
                &row.get::<_, i32>(2),
                &row.get::<_, i32>(3),
                &row.get::<_, String>(4),
                &row.get::<_, i32>(5),
                &row.get::<_, chrono::DateTime<chrono::Utc>>(6),
            ],
        )
        .await?;
        batch_count_rows += row.get::<_, i64>(7) as u64 - 1;
    }
    let delivery_ledger = tx
        .execute(
            "DELETE FROM delivery_ledger WHERE last_seen < now() - make_interval(secs => $1)",
            &[&seconds],
        )
        .await?;
    tx.commit().await?;
    Ok(Pruned {
        duplicates_seen,
        batch_count_rows,
        delivery_ledger,
    })
}
