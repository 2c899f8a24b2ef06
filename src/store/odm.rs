//! The form instances of one ODM message into PostgreSQL. A message of one form goes with the
//! committer's group ([`store_grouped`]: its version decided optimistically, decided again when
//! another writer stored it first); a message of several forms, or a withdrawal, is stored in one
//! transaction of its own, each version decided inside it ([`store`]):
//!
//! ```text
//! BEGIN
//!   for each form, in document order:
//!     lock_record_key(record_id, 0, wait)       the record's own lock: one writer decides at a time
//!     latest version (items, status)            whatever committed before the lock was granted
//!     correct::next(form, latest)               pure: unchanged, the next version, or refused
//!     ingest_records(version latest + 1)        the insert every record takes (audit row, data
//!                                               queries and their resolution, events, reply)
//! COMMIT                                        or ROLLBACK: a refused form stores nothing at all
//! ```
//!
//! The record lock is V10's advisory lock with version 0, which no stored version has (versions
//! start at 1), so it never stands in the way of a version's own key. Two importers of the same
//! record queue on it; the second reads the first's committed version and decides against it, so
//! both cannot store the same next version, and a re-import finds its own content stored. Two
//! forms of one message on the same record are applied in turn (the second sees the first, in
//! the same transaction).
//!
//! A message of one form takes no record lock. Two writers of one record may decide the same next
//! version; its natural key (record_id, version) lets one store it, and the other, told duplicate
//! or conflict, reads that version and decides against it, which is what queuing on the lock
//! would have come to. Writers of either kind meet on that key, so they may run side by side (a
//! rolling upgrade included).

use deadpool_postgres::GenericClient;
use tokio::time::Instant;

use super::ingest::{self, Attempt, OdmPart, OnBusy, Pending, Reply, Stored};
use super::{Committer, PersistError, WorkerShare, with_retries};
use crate::lane::Lane;
use crate::pipeline::Pseudonymizer;
use crate::pipeline::Rejected;
use crate::pipeline::deidentify::Status;
use crate::pipeline::odm::correct::{self, Latest, Next};
use crate::pipeline::odm::{OdmForm, UploadBatch};

/// What the message says beside its forms: every record of it carries the same.
pub struct Message<'a> {
    pub message_id: Option<&'a str>,
    pub payload_sha256: &'a str,
    pub reply: Option<&'a Reply>,
    pub event_headers: &'a serde_json::Value,
    pub uploaded_by: Option<&'a str>,
    /// The upload batch its headers name (a message that names one holds one form).
    pub batch: Option<UploadBatch>,
}

/// What one form instance came to, once committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormStored {
    /// Stored as this version, with this status (`removed`: a withdrawal).
    Version {
        version: i32,
        status: Status,
        removed: bool,
    },
    /// Nothing new: a duplicate of the latest version, a Context, a removal of nothing. The
    /// record and its latest version (0 when none is stored); `own` when that version was stored
    /// by this same message (same body, message id and batch): a redelivery, counted already.
    Unchanged {
        record_id: uuid::Uuid,
        latest: i32,
        own: bool,
    },
}

/// What the message came to: every form's outcome (committed), or a refusal (nothing written).
#[derive(Debug)]
pub enum Outcome {
    Stored(Vec<FormStored>),
    Refused(Rejected),
}

const BATCH_REMOVED: &str = "SELECT batch_add_removed($1, $2)";
const LOCK: &str = "SELECT lock_record_key($1, 0, true)";
const LATEST: &str = "SELECT version, items, status, payload_sha256, message_id, batch_id \
                      FROM crf_records WHERE record_id = $1 ORDER BY version DESC LIMIT 1";

/// Stores `forms` in one transaction on a connection of the workers' share of the pool (see the
/// module's text). A form refused by validation refuses the message: the transaction is rolled
/// back and the refusal, naming the form (its position among the message's forms, then its place
/// in the document), is returned. Errors are the database's (contention is the caller's to retry).
pub async fn store(
    share: &WorkerShare,
    forms: &[OdmForm],
    message: &Message<'_>,
    pseudonymizer: &Pseudonymizer,
    key_id: &str,
) -> Result<Outcome, PersistError> {
    let mut client = share.get().await?;
    let tx = client.transaction().await?;
    let lock = tx.prepare_cached(LOCK).await?;
    let latest = tx.prepare_cached(LATEST).await?;
    let mut out = Vec::with_capacity(forms.len());
    for (i, form) in forms.iter().enumerate() {
        // Pipelined: both are sent at once and run in the order first polled (tokio-postgres
        // executes requests in that order), so the read, a statement of its own under READ
        // COMMITTED, sees whatever committed before the lock was granted. One round trip less.
        let key: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&form.record_id];
        let (_, row) = tokio::try_join!(tx.query_one(&lock, &key), tx.query_opt(&latest, &key))?;
        let (pending, removed) = match decide(i, form, row, message, pseudonymizer)? {
            Decision::Refused(rejected) => return Ok(Outcome::Refused(rejected)),
            Decision::Unchanged(unchanged) => {
                out.push(unchanged);
                continue;
            }
            Decision::Store { pending, removed } => (pending, removed),
        };
        let stored = store_one(&tx, &pending, key_id).await?;
        if let (true, Some(b)) = (removed, message.batch) {
            // ingest_records counts accepted and queried versions; a removal counts as accepted.
            let add = tx.prepare_cached(BATCH_REMOVED).await?;
            tx.execute(&add, &[&b.id, &(b.size as i32)]).await?;
        }
        out.push(FormStored::Version {
            version: pending.record.version,
            status: stored,
            removed,
        });
    }
    tx.commit().await?;
    Ok(Outcome::Stored(out))
}

/// How many times a message of one form decides its version before it takes the record's lock
/// instead (see [`store_grouped`]).
const REDECIDE: usize = 3;

/// A message of one form, stored through the committer with the other records ready at that
/// moment instead of in a transaction of its own: one `ingest_records` call and one commit for the
/// group. Its record's latest version is read on its own (no lock, no transaction), its next
/// version decided against it, and that version inserted with the group. Optimistic: a writer that
/// stored the same version first makes the insert a duplicate or a conflict (the natural key is
/// never overwritten), and the latest version is read and decided again, at most [`REDECIDE`]
/// times. `None`: the form takes a transaction of its own ([`store`]), which holds the record's
/// lock while it decides: a withdrawal (its batch count is a second statement of that
/// transaction), or a record so busy that [`REDECIDE`] decisions all lost. A stored version is
/// counted by the committer.
pub async fn store_grouped(
    share: &WorkerShare,
    committer: &Committer,
    lane: Lane,
    form: &OdmForm,
    message: &Message<'_>,
    pseudonymizer: &Pseudonymizer,
    deadline: Instant,
) -> Option<Result<Outcome, PersistError>> {
    for _ in 0..REDECIDE {
        let row = with_retries(deadline, || async {
            let client = share.get().await?;
            let latest = client.prepare_cached(LATEST).await?;
            Ok(client.query_opt(&latest, &[&form.record_id]).await?)
        })
        .await;
        let row = match row {
            Ok(row) => row,
            Err(e) => return Some(Err(e)),
        };
        let (pending, removed) = match decide(0, form, row, message, pseudonymizer) {
            Ok(Decision::Refused(rejected)) => return Some(Ok(Outcome::Refused(rejected))),
            Ok(Decision::Unchanged(unchanged)) => {
                return Some(Ok(Outcome::Stored(vec![unchanged])));
            }
            Ok(Decision::Store { pending, removed }) => (pending, removed),
            Err(e) => return Some(Err(e)),
        };
        if removed {
            return None;
        }
        let version = pending.record.version;
        let (pending, attempt) = committer
            .commit(lane, vec![*pending], deadline)
            .await
            .pop()?;
        let stored = match attempt {
            Ok(Attempt::Done(stored)) => Ok(stored),
            // Another session is storing this key: wait for it, alone.
            Ok(Attempt::Busy) => committer.alone(&pending, deadline).await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(Stored::Created(status)) => {
                return Some(Ok(Outcome::Stored(vec![FormStored::Version {
                    version,
                    status,
                    removed: false,
                }])));
            }
            // The version was stored first by another writer: decide again against it.
            Ok(Stored::Duplicate { .. } | Stored::Conflict) => {
                tracing::debug!(record_id = %form.record_id, version,
                    "another writer stored this version first; deciding the next one again");
            }
            Err(e) => return Some(Err(e)),
        }
    }
    // A record this busy is stored the pessimistic way: in a transaction that holds its lock.
    None
}

/// What one form comes to against its record's latest version.
enum Decision {
    Refused(Rejected),
    Unchanged(FormStored),
    Store {
        pending: Box<Pending>,
        removed: bool,
    },
}

/// Form `i` of the message (counted from 0) against `latest`, its record's latest version as read
/// by [`LATEST`]: refused, unchanged, or the next version to store. Pure; a panic is a permanent
/// error naming the form.
fn decide(
    i: usize,
    form: &OdmForm,
    latest: Option<tokio_postgres::Row>,
    message: &Message<'_>,
    pseudonymizer: &Pseudonymizer,
) -> Result<Decision, PersistError> {
    let own = latest.as_ref().is_some_and(|r| {
        r.get::<_, &str>(3) == message.payload_sha256
            && r.get::<_, Option<&str>>(4) == message.message_id
            && r.get::<_, Option<uuid::Uuid>>(5) == message.batch.map(|b| b.id)
    });
    let latest = latest.map(|r| Latest {
        version: r.get(0),
        items: r.get(1),
        status: r.get(2),
    });
    let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        correct::next(form, latest.as_ref(), pseudonymizer)
    }));
    let next = match decided {
        Ok(Ok(next)) => next,
        Ok(Err(mut rejected)) => {
            rejected.reason = format!("form {} of the message: {}", i + 1, rejected.reason);
            return Ok(Decision::Refused(rejected));
        }
        Err(_) => {
            return Err(PersistError::Permanent(format!(
                "deciding the next version of form {} of the message panicked",
                i + 1
            )));
        }
    };
    let (mut record, removed) = match next {
        Next::Unchanged => {
            return Ok(Decision::Unchanged(FormStored::Unchanged {
                record_id: form.record_id,
                latest: latest.as_ref().map_or(0, |l| l.version),
                own,
            }));
        }
        Next::Store { record, removed } => (record, removed),
    };
    record.batch_id = message.batch.map(|b| b.id);
    record.batch_size = message.batch.map(|b| b.size);
    let reason = form
        .reason_for_change
        .as_deref()
        .map(|text| pseudonymizer.pseudonym("odm:reason_for_change", text));
    let pending = Pending {
        record: *record,
        message_id: message.message_id.map(str::to_string),
        payload_sha256: message.payload_sha256.to_string(),
        reply: message.reply.cloned(),
        event_headers: message.event_headers.clone(),
        uploaded_by: message.uploaded_by.map(str::to_string),
        odm: Some(OdmPart {
            visit_repeat: form.visit_repeat.clone(),
            form_repeat: form.form_repeat.clone(),
            reason_for_change: reason,
            removed,
        }),
    };
    Ok(Decision::Store {
        pending: Box::new(pending),
        removed,
    })
}

/// The insert of one version, in the open transaction.
async fn store_one(
    tx: &impl GenericClient,
    pending: &Pending,
    key_id: &str,
) -> Result<Status, PersistError> {
    match ingest::store(tx, &[pending], key_id, OnBusy::Wait)
        .await?
        .first()
    {
        Some(Attempt::Done(Stored::Created(status))) => Ok(*status),
        // The version was taken by a writer that does not take the record's lock (an edc.crf.v1
        // message with the same record id): decide again against what it stored.
        _ => Err(PersistError::Contention(
            "another version of the record was stored at the same moment".into(),
        )),
    }
}

/// Notes a message that stored nothing (every form unchanged) and is not a redelivery of its own
/// store: counted `duplicate` on its batch's receipt, and its `reply_to` answered `duplicate`,
/// naming its first record and that record's latest version; once per message, in its batch
/// (see `note_duplicate`; a message without an id is known by its body's hash).
pub async fn note_unchanged(
    share: &WorkerShare,
    record_id: uuid::Uuid,
    latest: i32,
    message: &Message<'_>,
) -> Result<(), PersistError> {
    let id = match message.message_id {
        Some(id) => id.to_string(),
        None => format!("sha256:{}", message.payload_sha256),
    };
    // Importing a file again is a new batch with the same message ids: each batch counts its own.
    let key = match message.batch {
        Some(b) => format!("{}/{id}", b.id),
        None => id,
    };
    let client = share.get().await?;
    let stmt = client
        .prepare_cached("SELECT note_duplicate($1, $2, $3, $4, $5, $6, $7)")
        .await?;
    client
        .execute(
            &stmt,
            &[
                &message.batch.map(|b| b.id),
                &message.batch.map(|b| b.size as i32),
                &record_id,
                &latest,
                &key,
                &message.reply.map(|r| &r.to),
                &message.reply.and_then(|r| r.correlation_id.as_ref()),
            ],
        )
        .await?;
    Ok(())
}
