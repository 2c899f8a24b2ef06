//! Stage 4, the only one with I/O: one record, one statement, one transaction.
//!
//! The record, its `created` audit row and its data queries are written by a single statement (three
//! data-modifying CTEs), so they commit together or not at all, in one round trip. The insert is
//! idempotent on the natural key (record_id, version): when the key exists, the stored payload hash
//! decides between a duplicate (same body: a redelivery or a re-upload, nothing written) and a
//! conflict (different body: never overwritten).
//!
//! Errors are classified here, once: [`PersistError::Transient`] is the infrastructure's fault (the
//! message is retried, never dead-lettered); [`PersistError::Permanent`] is the record's. Neither
//! carries PostgreSQL's own message text, which can quote the offending value.

use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::deidentify::{Deidentified, Status};
use super::{RejectKind, Rejected};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Created(Status),
    Duplicate,
    Conflict,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// Not the message's fault: the database is unreachable, restarting, overloaded or raced.
    #[error("database unavailable: {0}")]
    Transient(String),
    /// The database refused this record; retrying will not help.
    #[error("database refused the record: {0}")]
    Permanent(String),
}

impl PersistError {
    pub fn is_transient(&self) -> bool {
        matches!(self, PersistError::Transient(_))
    }
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
            other => PersistError::Transient(format!("connection pool: {other}")),
        }
    }
}

/// Decides retry versus dead-letter from the SQLSTATE alone.
pub fn classify(e: &tokio_postgres::Error) -> PersistError {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection broke, timed out or was never made.
        return PersistError::Transient("connection to PostgreSQL failed or was lost".into());
    };
    let c = code.code();
    let transient = c.starts_with("08") // connection exception
        || c.starts_with("53") // insufficient resources: too many connections, disk full
        || c.starts_with("57") // operator intervention: admin shutdown, cannot connect now
        || c.starts_with("58") // system error: I/O
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION; // a standby after a failover
    let permanent = c.starts_with("22") // data exception
        || c.starts_with("23") // integrity constraint violation
        || c.starts_with("54"); // program limit exceeded (a value too large to index)
    if permanent && !transient {
        PersistError::Permanent(format!("PostgreSQL SQLSTATE {c}"))
    } else {
        // Unknown errors (a missing table before migrations, an internal error) are retried rather
        // than dead-lettered: losing a record is worse than retrying one.
        PersistError::Transient(format!("PostgreSQL SQLSTATE {c}"))
    }
}

const INSERT_RECORD: &str = "
WITH ins AS (
    INSERT INTO crf_records (record_id, version, message_id, study, site, subject, visit, form,
        items, pseudonyms, birth_year, status, protocol_version, captured_at, entered_by, batch_id,
        payload_sha256)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
    ON CONFLICT (record_id, version) DO NOTHING
    RETURNING record_id, version
), audit AS (
    INSERT INTO audit_trail (record_id, version, action, actor, message_id, payload_sha256, detail)
    SELECT record_id, version, 'created', $15, $3, $17, 'status=' || $12 || ' protocol=' || $13
    FROM ins
), queries AS (
    INSERT INTO data_queries (record_id, version, check_id, message)
    SELECT ins.record_id, ins.version, f.check_id, f.message
    FROM ins, unnest($18::text[], $19::text[]) AS f(check_id, message)
)
SELECT EXISTS (SELECT 1 FROM ins),
       (SELECT payload_sha256 FROM crf_records WHERE record_id = $1 AND version = $2)";

const EXISTING_HASH: &str =
    "SELECT payload_sha256 FROM crf_records WHERE record_id = $1 AND version = $2";

/// Stores one record. Returns only after COMMIT (the statement runs in autocommit mode).
pub async fn store(
    client: &deadpool_postgres::Client,
    rec: &Deidentified,
    message_id: Option<&str>,
    payload_sha256: &str,
) -> Result<Stored, PersistError> {
    let stmt = client.prepare_cached(INSERT_RECORD).await?;
    let (checks, messages): (Vec<&str>, Vec<&str>) = rec
        .findings
        .iter()
        .map(|f| (f.check.as_str(), f.message.as_str()))
        .unzip();
    let row = client
        .query_one(
            &stmt,
            &[
                &rec.record_id,
                &rec.version,
                &message_id,
                &rec.study,
                &rec.site,
                &rec.subject,
                &rec.visit,
                &rec.form,
                &rec.items,
                &rec.pseudonyms,
                &rec.birth_year,
                &rec.status.as_str(),
                &rec.protocol_version,
                &rec.captured_at,
                &rec.entered_by,
                &rec.batch_id,
                &payload_sha256,
                &checks,
                &messages,
            ],
        )
        .await?;
    if row.get::<_, bool>(0) {
        return Ok(Stored::Created(rec.status));
    }
    let existing: Option<String> = match row.get(1) {
        Some(h) => Some(h),
        // The key was committed by another transaction after this statement's snapshot was taken
        // (a concurrent replica); look again with a fresh snapshot.
        None => client
            .query_opt(EXISTING_HASH, &[&rec.record_id, &rec.version])
            .await?
            .map(|r| r.get(0)),
    };
    match existing {
        Some(h) if h == payload_sha256 => Ok(Stored::Duplicate),
        Some(_) => Ok(Stored::Conflict),
        None => Err(PersistError::Transient(
            "record neither inserted nor found; will retry".into(),
        )),
    }
}

/// Where a rejection came from, for its `rejections` row.
pub struct RejectionRow<'a> {
    pub rejected: &'a Rejected,
    pub message_id: Option<&'a str>,
    pub body_sha256: &'a str,
    pub attempts: i32,
    pub consumer: &'a str,
}

/// Records a dead letter. Idempotent: a redelivered message does not add a second row.
pub async fn record_rejection(
    client: &deadpool_postgres::Client,
    row: &RejectionRow<'_>,
) -> Result<(), PersistError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO rejections (message_id, record_id, batch_id, kind, reason, attempts, body_sha256, consumer)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .await?;
    let r = row.rejected;
    let (record_id, batch_id): (Option<Uuid>, Option<Uuid>) = (r.record_id, r.batch_id);
    client
        .execute(
            &stmt,
            &[
                &row.message_id,
                &record_id,
                &batch_id,
                &r.kind.as_str(),
                &r.reason,
                &row.attempts,
                &row.body_sha256,
                &row.consumer,
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
    }
}
