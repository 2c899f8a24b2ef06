//! Database ceiling: the rows the daemon writes for the generated messages (a `crf_records` row and
//! its `audit_trail` row per record, `data_queries` rows for queried records, a `rejections` row per
//! refused message; column values from `pipeline::prepare`), written as fast as `connections`
//! connections can, on a fresh database migrated with the daemon's migrations, durable settings.
//!
//! - 1 record per transaction: one statement per message, the daemon's CTE insert (autocommit).
//! - N records per transaction: one statement per N messages, multi-row inserts from `unnest`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, FixedOffset};
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::data::{Dataset, Message};
use crate::world::{self, World};

/// The daemon's statement for one record (src/pipeline/persist.rs, `INSERT_RECORD`).
const ONE_RECORD: &str = "
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

const ONE_REJECTION: &str = "
INSERT INTO rejections (message_id, record_id, batch_id, kind, reason, attempts, body_sha256, consumer)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING";

/// Many messages in one statement: records, audit rows, data queries and rejections.
const MANY: &str = "
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::text[], $9::jsonb[], $10::jsonb[], $11::text[], $12::text[], $13::text[],
        $14::timestamptz[], $15::text[], $16::uuid[], $17::text[])
        AS t(record_id, version, message_id, study, site, subject, visit, form, items, pseudonyms,
             birth_year, status, protocol_version, captured_at, entered_by, batch_id, payload_sha256)
), ins AS (
    INSERT INTO crf_records (record_id, version, message_id, study, site, subject, visit, form,
        items, pseudonyms, birth_year, status, protocol_version, captured_at, entered_by, batch_id,
        payload_sha256)
    SELECT * FROM input
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
    FROM unnest($18::uuid[], $19::int[], $20::text[], $21::text[]) AS q(record_id, version, check_id, message)
    JOIN ins USING (record_id, version)
), rejected AS (
    INSERT INTO rejections (message_id, record_id, batch_id, kind, reason, attempts, body_sha256, consumer)
    SELECT * FROM unnest($22::text[], $23::uuid[], $24::uuid[], $25::text[], $26::text[], $27::int[],
        $28::text[], $29::text[])
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM ins";

const CONSUMER: &str = "edc-bench";

#[derive(Clone, Debug, Serialize)]
pub struct DbRun {
    pub connections: usize,
    pub records_per_tx: usize,
    /// Messages written (records plus rejections).
    pub records: u64,
    pub seconds: f64,
    pub rate: f64,
    /// The time cap ended the run before every message was written.
    pub capped: bool,
}

/// Writes the dataset with `connections` connections, `per_tx` messages per statement (and so per
/// transaction), for at most `cap`.
pub async fn run(
    data: &Dataset,
    connections: usize,
    per_tx: usize,
    cap: Duration,
) -> Result<DbRun> {
    let world = World::db_only("db").await?;
    let result = write_all(&world, data, connections, per_tx, cap).await;
    world.cleanup().await;
    let r = result?;
    eprintln!(
        "[bench] database ceiling, {connections} connections, {per_tx} record(s) per transaction: {:.0} records/s",
        r.rate
    );
    Ok(r)
}

async fn write_all(
    world: &World,
    data: &Dataset,
    connections: usize,
    per_tx: usize,
    cap: Duration,
) -> Result<DbRun> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(world::pg(&world.db_url()).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + cap;
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let (data, next) = (data.clone(), next.clone());
        tasks.spawn(async move {
            let sql = if per_tx == 1 { ONE_RECORD } else { MANY };
            let stmt = client.prepare(sql).await?;
            let rejection = client.prepare(ONE_REJECTION).await?;
            let mut written = 0u64;
            while Instant::now() < deadline {
                let from = next.fetch_add(per_tx, Ordering::Relaxed);
                if from >= data.len() {
                    break;
                }
                let chunk = &data[from..(from + per_tx).min(data.len())];
                if per_tx == 1 {
                    one(&client, &stmt, &rejection, &chunk[0]).await?;
                } else {
                    many(&client, &stmt, chunk).await?;
                }
                written += chunk.len() as u64;
            }
            Ok::<_, anyhow::Error>(written)
        });
    }
    let mut records = 0;
    while let Some(done) = tasks.join_next().await {
        records += done??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(DbRun {
        connections,
        records_per_tx: per_tx,
        records,
        seconds,
        rate: records as f64 / seconds,
        capped: (records as usize) < data.len(),
    })
}

async fn one(
    c: &tokio_postgres::Client,
    record: &tokio_postgres::Statement,
    rejection: &tokio_postgres::Statement,
    m: &Message,
) -> Result<()> {
    match &m.outcome {
        Ok(r) => {
            let (checks, messages): (Vec<&str>, Vec<&str>) = r
                .findings
                .iter()
                .map(|f| (f.check.as_str(), f.message.as_str()))
                .unzip();
            c.query_one(
                record,
                &[
                    &r.record_id,
                    &r.version,
                    &m.message_id,
                    &r.study,
                    &r.site,
                    &r.subject,
                    &r.visit,
                    &r.form,
                    &r.items,
                    &r.pseudonyms,
                    &r.birth_year,
                    &r.status.as_str(),
                    &r.protocol_version,
                    &r.captured_at,
                    &r.entered_by,
                    &r.batch_id,
                    &m.sha256,
                    &checks,
                    &messages,
                ],
            )
            .await?;
        }
        Err(j) => {
            c.execute(
                rejection,
                &[
                    &m.message_id,
                    &j.record_id,
                    &j.batch_id,
                    &j.kind.as_str(),
                    &j.reason,
                    &1i32,
                    &m.sha256,
                    &CONSUMER,
                ],
            )
            .await?;
        }
    }
    Ok(())
}

/// Column arrays of one multi-row statement.
#[derive(Default)]
struct Columns<'a> {
    ids: Vec<Uuid>,
    versions: Vec<i32>,
    message_ids: Vec<&'a str>,
    studies: Vec<&'a str>,
    sites: Vec<&'a str>,
    subjects: Vec<&'a str>,
    visits: Vec<&'a str>,
    forms: Vec<&'a str>,
    items: Vec<&'a serde_json::Value>,
    pseudonyms: Vec<&'a serde_json::Value>,
    birth_years: Vec<Option<&'a str>>,
    statuses: Vec<&'a str>,
    protocols: Vec<&'a str>,
    captured: Vec<DateTime<FixedOffset>>,
    entered: Vec<&'a str>,
    batches: Vec<Option<Uuid>>,
    hashes: Vec<&'a str>,
    q_ids: Vec<Uuid>,
    q_versions: Vec<i32>,
    q_checks: Vec<&'a str>,
    q_messages: Vec<&'a str>,
    j_message_ids: Vec<&'a str>,
    j_ids: Vec<Option<Uuid>>,
    j_batches: Vec<Option<Uuid>>,
    j_kinds: Vec<&'static str>,
    j_reasons: Vec<&'a str>,
    j_attempts: Vec<i32>,
    j_hashes: Vec<&'a str>,
    j_consumers: Vec<&'a str>,
}

async fn many(
    c: &tokio_postgres::Client,
    stmt: &tokio_postgres::Statement,
    chunk: &[Message],
) -> Result<()> {
    let mut k = Columns::default();
    for m in chunk {
        match &m.outcome {
            Ok(r) => {
                k.ids.push(r.record_id);
                k.versions.push(r.version);
                k.message_ids.push(&m.message_id);
                k.studies.push(&r.study);
                k.sites.push(&r.site);
                k.subjects.push(&r.subject);
                k.visits.push(&r.visit);
                k.forms.push(&r.form);
                k.items.push(&r.items);
                k.pseudonyms.push(&r.pseudonyms);
                k.birth_years.push(r.birth_year.as_deref());
                k.statuses.push(r.status.as_str());
                k.protocols.push(&r.protocol_version);
                k.captured.push(r.captured_at);
                k.entered.push(&r.entered_by);
                k.batches.push(r.batch_id);
                k.hashes.push(&m.sha256);
                for f in &r.findings {
                    k.q_ids.push(r.record_id);
                    k.q_versions.push(r.version);
                    k.q_checks.push(&f.check);
                    k.q_messages.push(&f.message);
                }
            }
            Err(j) => {
                k.j_message_ids.push(&m.message_id);
                k.j_ids.push(j.record_id);
                k.j_batches.push(j.batch_id);
                k.j_kinds.push(j.kind.as_str());
                k.j_reasons.push(&j.reason);
                k.j_attempts.push(1);
                k.j_hashes.push(&m.sha256);
                k.j_consumers.push(CONSUMER);
            }
        }
    }
    c.query_one(
        stmt,
        &[
            &k.ids,
            &k.versions,
            &k.message_ids,
            &k.studies,
            &k.sites,
            &k.subjects,
            &k.visits,
            &k.forms,
            &k.items,
            &k.pseudonyms,
            &k.birth_years,
            &k.statuses,
            &k.protocols,
            &k.captured,
            &k.entered,
            &k.batches,
            &k.hashes,
            &k.q_ids,
            &k.q_versions,
            &k.q_checks,
            &k.q_messages,
            &k.j_message_ids,
            &k.j_ids,
            &k.j_batches,
            &k.j_kinds,
            &k.j_reasons,
            &k.j_attempts,
            &k.j_hashes,
            &k.j_consumers,
        ],
    )
    .await?;
    Ok(())
}
