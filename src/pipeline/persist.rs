//! Stage 4, the only one with I/O: records to PostgreSQL, one call, one transaction.
//!
//! A record, its `created` audit row, data queries, alerts, events, callback and batch receipt are
//! written by one call of the `ingest_records` function (see the migrations), so they commit together
//! or not at all, in one round trip, for one record or a batch. The insert is idempotent on the
//! natural key (record_id, version): when the key exists, the stored payload hash
//! decides between a duplicate (same body: a redelivery or a re-upload, nothing written) and a
//! conflict (different body: never overwritten).
//!
//! Errors are classified here, once, into the four [`PersistError`] classes that decide what the
//! worker does next: pause (unavailable), retry now (contention), retry later through the broker
//! (retryable), or dead-letter (permanent).

use tokio_postgres::error::SqlState;

use super::deidentify::{Deidentified, Status};
use super::{RejectKind, Rejected};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Created(Status),
    /// Already stored with the same payload. `reupload`: under another message id than the stored
    /// one (an uploader sent it again), as opposed to a redelivery of the same message.
    Duplicate {
        reupload: bool,
    },
    Conflict,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The database is unreachable, restarting, refusing connections or out of room: not the
    /// message's fault. Consumption pauses until the database answers again.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Lost a race with another transaction (serialization failure, deadlock, lock timeout): retry
    /// at once.
    #[error("database contention: {0}")]
    Contention(String),
    /// Neither clearly permanent nor infrastructure: retried later through the broker, a bounded
    /// number of times.
    #[error("database error: {0}")]
    Retryable(String),
    /// The database refused this record; retrying will not help.
    #[error("database refused the record: {0}")]
    Permanent(String),
}

impl From<tokio_postgres::Error> for PersistError {
    fn from(e: tokio_postgres::Error) -> Self {
        classify(&e)
    }
}

impl From<deadpool_postgres::PoolError> for PersistError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => classify(&e),
            other => PersistError::Unavailable(format!("connection pool: {other}")),
        }
    }
}

/// Decides the error's class from the SQLSTATE alone (PostgreSQL's message text is never kept: it
/// can quote the offending value).
pub fn classify(e: &tokio_postgres::Error) -> PersistError {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection broke, timed out or was never made.
        return PersistError::Unavailable("connection to PostgreSQL failed or was lost".into());
    };
    let c = code.code();
    let what = format!("PostgreSQL SQLSTATE {c}");
    if c.starts_with("08") // connection exception
        || c.starts_with("53") // insufficient resources: too many connections, disk full
        || c.starts_with("57") // operator intervention: admin shutdown, cannot connect now
        || c.starts_with("58") // system error: I/O
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION // a standby after a failover
        || *code == SqlState::UNDEFINED_TABLE
    // schema not migrated yet
    {
        PersistError::Unavailable(what)
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
    {
        PersistError::Contention(what)
    } else if c.starts_with("22") // data exception
        || c.starts_with("23") // integrity constraint violation
        || c.starts_with("54")
    // program limit exceeded (a value too large to index)
    {
        PersistError::Permanent(what)
    } else {
        PersistError::Retryable(what)
    }
}

/// A record to store and what it needs besides itself.
pub struct BatchItem<'a> {
    pub record: &'a Deidentified,
    pub message_id: Option<&'a str>,
    pub payload_sha256: &'a str,
    /// AMQP `reply_to` and `correlation_id`: where the outcome is answered, after the commit.
    pub reply_to: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
}

const INGEST: &str =
    "SELECT ord, inserted, existing_sha256, existing_message_id FROM ingest_records(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
    $22, $23, $24, $25, $26, $27, $28)";

/// Stores one record: a batch of one.
pub async fn store(
    client: &deadpool_postgres::Client,
    item: BatchItem<'_>,
) -> Result<Stored, PersistError> {
    let mut out = store_batch(client, &[item]).await?;
    out.pop()
        .ok_or_else(|| PersistError::Retryable("the store returned no outcome".into()))
}

/// Stores records with one call of `ingest_records` (see the migrations): one statement, one
/// transaction, one round trip, whatever the batch size. It writes each record with its audit row,
/// data queries, alerts, events, callback and batch receipt. The natural keys must be distinct within
/// the batch (the caller holds repeats back for a later call). Returns one outcome per item, in order;
/// if the call fails, nothing of the batch is written.
pub async fn store_batch(
    client: &deadpool_postgres::Client,
    items: &[BatchItem<'_>],
) -> Result<Vec<Stored>, PersistError> {
    let stmt = client.prepare_cached(INGEST).await?;
    let n = items.len();
    let ord: Vec<i32> = (0..n as i32).collect();
    let ids: Vec<_> = items.iter().map(|i| i.record.record_id).collect();
    let versions: Vec<_> = items.iter().map(|i| i.record.version).collect();
    let message_ids: Vec<_> = items.iter().map(|i| i.message_id).collect();
    let studies: Vec<_> = items.iter().map(|i| i.record.study.as_str()).collect();
    let sites: Vec<_> = items.iter().map(|i| i.record.site.as_str()).collect();
    let subjects: Vec<_> = items.iter().map(|i| i.record.subject.as_str()).collect();
    let visits: Vec<_> = items.iter().map(|i| i.record.visit.as_str()).collect();
    let forms: Vec<_> = items.iter().map(|i| i.record.form.as_str()).collect();
    let item_values: Vec<_> = items.iter().map(|i| &i.record.items).collect();
    let pseudonyms: Vec<_> = items.iter().map(|i| &i.record.pseudonyms).collect();
    let birth_years: Vec<_> = items
        .iter()
        .map(|i| i.record.birth_year.as_deref())
        .collect();
    let statuses: Vec<_> = items.iter().map(|i| i.record.status.as_str()).collect();
    let protocols: Vec<_> = items
        .iter()
        .map(|i| i.record.protocol_version.as_str())
        .collect();
    let captured: Vec<_> = items.iter().map(|i| i.record.captured_at).collect();
    let entered: Vec<_> = items.iter().map(|i| i.record.entered_by.as_str()).collect();
    let batch_ids: Vec<_> = items.iter().map(|i| i.record.batch_id).collect();
    let batch_sizes: Vec<_> = items
        .iter()
        .map(|i| i.record.batch_size.map(|s| s as i32))
        .collect();
    let hashes: Vec<_> = items.iter().map(|i| i.payload_sha256).collect();
    let reply_to: Vec<_> = items.iter().map(|i| i.reply_to).collect();
    let correlation: Vec<_> = items.iter().map(|i| i.correlation_id).collect();
    let (mut q_ids, mut q_versions, mut q_checks, mut q_messages) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut a_ids, mut a_versions, mut a_alerts) = (Vec::new(), Vec::new(), Vec::new());
    for item in items {
        let r = item.record;
        for f in &r.findings {
            q_ids.push(r.record_id);
            q_versions.push(r.version);
            q_checks.push(f.check.as_str());
            q_messages.push(f.message.as_str());
        }
        for alert in &r.alerts {
            a_ids.push(r.record_id);
            a_versions.push(r.version);
            a_alerts.push(alert.as_str());
        }
    }
    let rows = client
        .query(
            &stmt,
            &[
                &ord,
                &ids,
                &versions,
                &message_ids,
                &studies,
                &sites,
                &subjects,
                &visits,
                &forms,
                &item_values,
                &pseudonyms,
                &birth_years,
                &statuses,
                &protocols,
                &captured,
                &entered,
                &batch_ids,
                &batch_sizes,
                &hashes,
                &reply_to,
                &correlation,
                &q_ids,
                &q_versions,
                &q_checks,
                &q_messages,
                &a_ids,
                &a_versions,
                &a_alerts,
            ],
        )
        .await?;
    if rows.len() != n {
        return Err(PersistError::Retryable(
            "the store returned fewer outcomes than records".into(),
        ));
    }
    let mut out = Vec::with_capacity(n);
    for (item, row) in items.iter().zip(&rows) {
        let inserted: bool = row.get(1);
        let existing: Option<String> = row.get(2);
        let existing_message_id: Option<String> = row.get(3);
        out.push(if inserted {
            Stored::Created(item.record.status)
        } else {
            match existing {
                Some(h) if h == item.payload_sha256 => Stored::Duplicate {
                    // Another message id than the stored one: a re-upload, not a redelivery.
                    reupload: item.message_id.is_some()
                        && item.message_id != existing_message_id.as_deref(),
                },
                Some(_) => Stored::Conflict,
                None => {
                    return Err(PersistError::Contention(
                        "record neither inserted nor found".into(),
                    ));
                }
            }
        });
    }
    Ok(out)
}

/// Counts a re-upload on its batch receipt (once per message id) and answers its `reply_to`.
pub async fn note_duplicate(
    client: &deadpool_postgres::Client,
    item: &BatchItem<'_>,
) -> Result<(), PersistError> {
    let stmt = client
        .prepare_cached("SELECT note_duplicate($1, $2, $3, $4, $5, $6, $7)")
        .await?;
    let r = item.record;
    client
        .execute(
            &stmt,
            &[
                &r.batch_id,
                &r.batch_size.map(|s| s as i32),
                &r.record_id,
                &r.version,
                &item.message_id,
                &item.reply_to,
                &item.correlation_id,
            ],
        )
        .await?;
    Ok(())
}

/// Where a rejection came from, for its `rejections` row.
pub struct RejectionRow<'a> {
    pub rejected: &'a Rejected,
    pub message_id: Option<&'a str>,
    pub body_sha256: &'a str,
    pub attempts: i32,
    pub consumer: &'a str,
    pub reply_to: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
}

/// Records a dead letter: its `rejections` row, its batch receipt and its `reply_to` answer, in one
/// transaction. Idempotent: a redelivered message changes nothing.
pub async fn record_rejection(
    client: &deadpool_postgres::Client,
    row: &RejectionRow<'_>,
) -> Result<(), PersistError> {
    let stmt = client
        .prepare_cached("SELECT record_rejection($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
        .await?;
    let r = row.rejected;
    client
        .execute(
            &stmt,
            &[
                &row.message_id,
                &r.record_id,
                &r.batch_id,
                &r.batch_size.map(|s| s as i32),
                &r.kind.as_str(),
                &r.reason,
                &row.attempts,
                &row.body_sha256,
                &row.consumer,
                &row.reply_to,
                &row.correlation_id,
            ],
        )
        .await?;
    Ok(())
}

/// The rejection for a permanent database error.
pub fn failed(e: &PersistError, rec: &Deidentified) -> Rejected {
    Rejected {
        kind: RejectKind::Failed,
        reason: e.to_string(),
        record_id: Some(rec.record_id),
        batch_id: rec.batch_id,
        batch_size: rec.batch_size,
    }
}

/// Counts a start of a message that was delivered before. Only a start by another process instance
/// than the previous one counts: the previous instance died (or lost the message) mid-job. A message
/// this same process gave back (an outage, a lost channel) does not count against it. Returns the
/// count. The row is committed before the job runs, so it survives a crash of this process.
pub async fn ledger_start(
    client: &deadpool_postgres::Client,
    key: &str,
    consumer: &str,
) -> Result<i32, PersistError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO delivery_ledger (message_key, starts, last_consumer) VALUES ($1, 1, $2)
             ON CONFLICT (message_key) DO UPDATE
                SET starts = delivery_ledger.starts
                        + CASE WHEN delivery_ledger.last_consumer = $2 THEN 0 ELSE 1 END,
                    last_seen = now(), last_consumer = $2
             RETURNING starts",
        )
        .await?;
    Ok(client.query_one(&stmt, &[&key, &consumer]).await?.get(0))
}

/// Forgets a message's starts once it is settled.
pub async fn ledger_clear(
    client: &deadpool_postgres::Client,
    key: &str,
) -> Result<(), PersistError> {
    let stmt = client
        .prepare_cached("DELETE FROM delivery_ledger WHERE message_key = $1")
        .await?;
    client.execute(&stmt, &[&key]).await?;
    Ok(())
}
