//! Records into PostgreSQL: one call, one statement, one transaction.
//!
//! A record, its `created` audit row, data queries, alerts, events, callback and batch receipt are
//! written by one call of the `ingest_records` function (see the migrations), so they commit together
//! or not at all, in one round trip, for one record or a group of them. The insert is idempotent on
//! the natural key (record_id, version): when the key exists, the stored payload hash decides between
//! a duplicate (same body: a redelivery or a re-upload, nothing written) and a conflict (different
//! body: never overwritten).
//!
//! A key another session is storing at that moment (another replica with the same record, its
//! transaction not committed yet) would make the statement wait for that session, and with it every
//! record of the group. Each writer announces the keys it stores with an advisory lock (see V10):
//! the group statement leaves out a record whose key is announced by another session
//! ([`Attempt::Busy`], [`OnBusy::Skip`]), and that record is stored again alone, by a statement that
//! waits for the other session ([`OnBusy::Wait`]).

use crate::pipeline::Rejected;
use crate::pipeline::deidentify::{Deidentified, Status};

use super::PersistError;

/// What storing a record came to.
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

/// What one call made of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    Done(Stored),
    /// Not written: another session is storing the same key at this moment. Store it again alone
    /// with [`OnBusy::Wait`].
    Busy,
}

/// What a call does about a record whose key another session is storing at that moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnBusy {
    /// Leave it out, and say so ([`Attempt::Busy`]): for a group, whose other records then wait
    /// for no one.
    Skip,
    /// Wait for the other session's transaction to end (at most `lock_timeout`), then store it
    /// (or find it stored): for a record alone.
    Wait,
}

/// Where a message's outcome is answered, after the commit: its AMQP `reply_to` and
/// `correlation_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub to: String,
    pub correlation_id: Option<String>,
}

/// A prepared record on its way to the database, and what it needs besides itself.
#[derive(Debug)]
pub struct Pending {
    pub record: Deidentified,
    pub message_id: Option<String>,
    /// SHA-256 of the message body as received.
    pub payload_sha256: String,
    pub reply: Option<Reply>,
    /// AMQP headers the record's events and callback carry (its trace context), as a JSON object.
    pub event_headers: serde_json::Value,
    /// The AMQP `user_id` RabbitMQ verified (see `Inbound::uploaded_by`), on the audit row.
    pub uploaded_by: Option<String>,
    /// What an ODM form instance adds; None for an `edc.crf.v1` record.
    pub odm: Option<OdmPart>,
}

/// What a record made from an ODM form instance stores besides an `edc.crf.v1` record's columns.
#[derive(Clone, Debug, Default)]
pub struct OdmPart {
    /// `StudyEventRepeatKey` and `FormRepeatKey` (`"1"` when absent).
    pub visit_repeat: String,
    pub form_repeat: String,
    /// The keyed pseudonym of the AuditRecord's reason for change: never its text.
    pub reason_for_change: Option<String>,
    /// A withdrawal (TransactionType Remove): stored with status `removed` and no items.
    pub removed: bool,
}

impl Pending {
    fn reply_to(&self) -> Option<&str> {
        self.reply.as_ref().map(|r| r.to.as_str())
    }

    /// The stored status: `removed` for a withdrawal, else the record's own.
    fn status(&self) -> &'static str {
        match &self.odm {
            Some(o) if o.removed => "removed",
            _ => self.record.status.as_str(),
        }
    }

    fn correlation_id(&self) -> Option<&str> {
        self.reply
            .as_ref()
            .and_then(|r| r.correlation_id.as_deref())
    }
}

const INGEST: &str =
    "SELECT ord, inserted, busy, existing_sha256, existing_message_id FROM ingest_records(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
    $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35, $36)";

/// Stores records with one call of `ingest_records` (see the migrations): one statement, one
/// transaction, one round trip, however many records. It writes each record with its audit row,
/// data queries, alerts, events, callback and batch receipt. The natural keys must be distinct among
/// `items` (the caller holds repeats back for a later call). Returns one outcome per item, in order
/// ([`Attempt::Busy`] only with [`OnBusy::Skip`]); if the call fails, nothing of it is written.
pub async fn store(
    client: &impl deadpool_postgres::GenericClient,
    items: &[&Pending],
    key_id: &str,
    on_busy: OnBusy,
) -> Result<Vec<Attempt>, PersistError> {
    let stmt = client.prepare_cached(INGEST).await?;
    let n = items.len();
    let ord: Vec<i32> = (0..n as i32).collect();
    let ids: Vec<_> = items.iter().map(|i| i.record.record_id).collect();
    let versions: Vec<_> = items.iter().map(|i| i.record.version).collect();
    let message_ids: Vec<_> = items.iter().map(|i| i.message_id.as_deref()).collect();
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
    let statuses: Vec<_> = items.iter().map(|i| i.status()).collect();
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
    let hashes: Vec<_> = items.iter().map(|i| i.payload_sha256.as_str()).collect();
    let reply_to: Vec<_> = items.iter().map(|i| i.reply_to()).collect();
    let correlation: Vec<_> = items.iter().map(|i| i.correlation_id()).collect();
    let headers: Vec<_> = items.iter().map(|i| &i.event_headers).collect();
    let odm = |f: fn(&OdmPart) -> Option<&str>| -> Vec<Option<&str>> {
        items.iter().map(|i| i.odm.as_ref().and_then(f)).collect()
    };
    let visit_repeats = odm(|o| Some(o.visit_repeat.as_str()));
    let form_repeats = odm(|o| Some(o.form_repeat.as_str()));
    let reasons = odm(|o| o.reason_for_change.as_deref());
    let sources: Vec<_> = items
        .iter()
        .map(|i| if i.odm.is_some() { "odm" } else { "edc.crf.v1" })
        .collect();
    let uploaders: Vec<_> = items.iter().map(|i| i.uploaded_by.as_deref()).collect();
    let (mut q_ids, mut q_versions, mut q_checks, mut q_messages) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut a_ids, mut a_versions, mut a_alerts) = (Vec::new(), Vec::new(), Vec::new());
    for item in items {
        let r = &item.record;
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
                &headers,
                &key_id,
                &q_ids,
                &q_versions,
                &q_checks,
                &q_messages,
                &a_ids,
                &a_versions,
                &a_alerts,
                &(on_busy == OnBusy::Skip),
                &visit_repeats,
                &form_repeats,
                &sources,
                &uploaders,
                &reasons,
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
        let busy: bool = row.get(2);
        let existing: Option<String> = row.get(3);
        let existing_message_id: Option<String> = row.get(4);
        if busy {
            out.push(Attempt::Busy);
            continue;
        }
        out.push(Attempt::Done(if inserted {
            Stored::Created(item.record.status)
        } else {
            match existing {
                Some(h) if h == item.payload_sha256 => Stored::Duplicate {
                    // Another message id than the stored one: a re-upload, not a redelivery.
                    reupload: item.message_id.is_some()
                        && item.message_id.as_deref() != existing_message_id.as_deref(),
                },
                Some(_) => Stored::Conflict,
                None => {
                    return Err(PersistError::Contention(
                        "record neither inserted nor found".into(),
                    ));
                }
            }
        }));
    }
    Ok(out)
}

/// Counts a re-upload on its batch receipt (once per message id) and answers its `reply_to`.
pub async fn note_duplicate(
    client: &deadpool_postgres::Client,
    item: &Pending,
) -> Result<(), PersistError> {
    let stmt = client
        .prepare_cached("SELECT note_duplicate($1, $2, $3, $4, $5, $6, $7)")
        .await?;
    let r = &item.record;
    client
        .execute(
            &stmt,
            &[
                &r.batch_id,
                &r.batch_size.map(|s| s as i32),
                &r.record_id,
                &r.version,
                &item.message_id,
                &item.reply_to(),
                &item.correlation_id(),
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
    pub reply: Option<&'a Reply>,
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
                &row.reply.map(|r| r.to.as_str()),
                &row.reply.and_then(|r| r.correlation_id.as_deref()),
            ],
        )
        .await?;
    Ok(())
}
