//! Stage 4, the only one with I/O: one record, one statement, one transaction.
//!
//! The record, its `created` audit row and its data queries are written by a single statement (three
//! data-modifying CTEs), so they commit together or not at all, in one round trip. The insert is
//! idempotent on the natural key (record_id, version): when the key exists, the stored payload hash
//! decides between a duplicate (same body: a redelivery or a re-upload, nothing written) and a
//! conflict (different body: never overwritten).
//!
//! Errors are classified here, once, into the four [`PersistError`] classes that decide what the
//! worker does next: pause (unavailable), retry now (contention), retry later through the broker
//! (retryable), or dead-letter (permanent).

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
        None => Err(PersistError::Contention(
            "record neither inserted nor found".into(),
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

/// One record of a batch and what it needs besides the record itself.
pub struct BatchItem<'a> {
    pub record: &'a Deidentified,
    pub message_id: Option<&'a str>,
    pub payload_sha256: &'a str,
}

const INSERT_BATCH: &str = "
WITH input AS (
    SELECT * FROM unnest($1::int[], $2::uuid[], $3::int[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::text[], $10::jsonb[], $11::jsonb[], $12::text[], $13::text[],
        $14::text[], $15::timestamptz[], $16::text[], $17::uuid[], $18::text[])
        AS t(ord, record_id, version, message_id, study, site, subject, visit, form, items,
             pseudonyms, birth_year, status, protocol_version, captured_at, entered_by, batch_id,
             payload_sha256)
), ins AS (
    INSERT INTO crf_records (record_id, version, message_id, study, site, subject, visit, form,
        items, pseudonyms, birth_year, status, protocol_version, captured_at, entered_by, batch_id,
        payload_sha256)
    SELECT record_id, version, message_id, study, site, subject, visit, form, items, pseudonyms,
        birth_year, status, protocol_version, captured_at, entered_by, batch_id, payload_sha256
    FROM input ORDER BY ord
    ON CONFLICT (record_id, version) DO NOTHING
    RETURNING record_id, version, status, protocol_version, entered_by, message_id, payload_sha256
), audit AS (
    INSERT INTO audit_trail (record_id, version, action, actor, message_id, payload_sha256, detail)
    SELECT record_id, version, 'created', entered_by, message_id, payload_sha256,
        'status=' || status || ' protocol=' || protocol_version
    FROM ins
), queries AS (
    INSERT INTO data_queries (record_id, version, check_id, message)
    SELECT q.record_id, q.version, q.check_id, q.message
    FROM unnest($19::uuid[], $20::int[], $21::text[], $22::text[]) AS q(record_id, version, check_id, message)
    JOIN ins USING (record_id, version)
)
SELECT i.ord, ins.record_id IS NOT NULL, c.payload_sha256
FROM input i
LEFT JOIN ins USING (record_id, version)
LEFT JOIN crf_records c ON c.record_id = i.record_id AND c.version = i.version
ORDER BY i.ord";

/// Stores many records in one statement, so one transaction and one round trip. The natural keys
/// must be distinct within the batch (the caller holds repeats back for a later statement). Returns
/// one outcome per item, in order. If the statement fails, nothing of the batch is written.
pub async fn store_batch(
    client: &deadpool_postgres::Client,
    items: &[BatchItem<'_>],
) -> Result<Vec<Stored>, PersistError> {
    let stmt = client.prepare_cached(INSERT_BATCH).await?;
    let n = items.len();
    let mut ord = Vec::with_capacity(n);
    let (mut ids, mut versions, mut message_ids) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut studies, mut sites, mut subjects, mut visits, mut forms) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut item_values, mut pseudonyms, mut birth_years, mut statuses, mut protocols) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut captured, mut entered, mut batches, mut hashes) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut q_ids, mut q_versions, mut q_checks, mut q_messages) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let r = item.record;
        ord.push(i as i32);
        ids.push(r.record_id);
        versions.push(r.version);
        message_ids.push(item.message_id);
        studies.push(r.study.as_str());
        sites.push(r.site.as_str());
        subjects.push(r.subject.as_str());
        visits.push(r.visit.as_str());
        forms.push(r.form.as_str());
        item_values.push(&r.items);
        pseudonyms.push(&r.pseudonyms);
        birth_years.push(r.birth_year.as_deref());
        statuses.push(r.status.as_str());
        protocols.push(r.protocol_version.as_str());
        captured.push(r.captured_at);
        entered.push(r.entered_by.as_str());
        batches.push(r.batch_id);
        hashes.push(item.payload_sha256);
        for f in &r.findings {
            q_ids.push(r.record_id);
            q_versions.push(r.version);
            q_checks.push(f.check.as_str());
            q_messages.push(f.message.as_str());
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
                &batches,
                &hashes,
                &q_ids,
                &q_versions,
                &q_checks,
                &q_messages,
            ],
        )
        .await?;
    let mut out = Vec::with_capacity(n);
    for (item, row) in items.iter().zip(&rows) {
        let inserted: bool = row.get(1);
        let existing: Option<String> = row.get(2);
        out.push(if inserted {
            Stored::Created(item.record.status)
        } else {
            match existing {
                Some(h) if h == item.payload_sha256 => Stored::Duplicate,
                Some(_) => Stored::Conflict,
                // Committed by a concurrent transaction after this statement's snapshot.
                None => match client
                    .query_opt(
                        EXISTING_HASH,
                        &[&item.record.record_id, &item.record.version],
                    )
                    .await?
                {
                    Some(r) if r.get::<_, String>(0) == item.payload_sha256 => Stored::Duplicate,
                    Some(_) => Stored::Conflict,
                    None => {
                        return Err(PersistError::Contention(
                            "record neither inserted nor found".into(),
                        ));
                    }
                },
            }
        });
    }
    if out.len() != n {
        return Err(PersistError::Retryable(
            "batch statement returned fewer rows than records".into(),
        ));
    }
    Ok(out)
}
