//! A delivery whose content type says ODM XML (`application/xml`, `application/vnd.cdisc.odm+xml`,
//! parameters such as `; charset=utf-8` allowed, any case): a document of one or more form
//! instances, stored together or refused together.
//!
//! ```text
//! delivery ─ gate closed? ─────────────────────────────────────────────────────────> Postpone
//!   v
//! read (pure): properties storable? user_id if required? size <= max_message_bytes?
//!   ODM reader: the document refused ──────────────────> rejections row ─> DeadLetter malformed
//!   a form refused by the reader or the mapping ───────> rejections row ─> DeadLetter invalid
//!   v
//! one form: its next version decided against the latest read, stored with the committer's group
//!   (another writer stored that version first: read and decide again)
//! several forms, or a withdrawal: store::odm, ONE transaction, each form's next version decided
//!   under its record's lock
//!   a form refused by validation: nothing stored ─────> rejections row ─> DeadLetter invalid
//!   v
//! committed ─> Done | outage ─> Postpone | contention, retryable ─> Retry | permanent ─> failed
//! ```
//!
//! It runs beside the JSON jobs (sharing the isolation lock), under the same gate, the same
//! `job_timeout` and the same error classification; a redelivered ODM message runs alone after
//! its start is counted, as any other (see `job`). A message of one form (every message `odm
//! import` publishes) goes through group commit like a JSON record, its version decided
//! optimistically (see `store::odm::store_grouped`); a message of several forms, stored together
//! or refused together, keeps a transaction of its own, where each form's latest version is read
//! under its record's lock.

use std::panic::AssertUnwindSafe;

use tokio::time::Instant;
use tracing::Instrument;

use super::Context;
use super::fate::{panic_reason, reject, unavailable, with_attempts};
use crate::broker::inbound::{H_BATCH_ID, UploadBatch, upload_batch};
use crate::broker::{Fate, Inbound};
use crate::odm::clinical::{ClinicalReader, ReadError};
use crate::odm::xml::Limits;
use crate::pipeline::deidentify::Status;
use crate::pipeline::odm::{self, OdmForm};
use crate::pipeline::{RejectKind, Rejected};
use crate::protocol::Registry;
use crate::store::ingest::Stored;
use crate::store::odm::{FormStored, Message, Outcome, store_grouped};
use crate::store::{PersistError, with_retries};

/// The media types of an ODM message.
const ODM_TYPES: [&str; 2] = ["application/xml", "application/vnd.cdisc.odm+xml"];

/// Whether the delivery's AMQP `content_type` says ODM XML (its parameters ignored).
pub fn is_odm(d: &Inbound) -> bool {
    d.properties
        .content_type()
        .as_ref()
        .is_some_and(|t| is_odm_type(t.as_str()))
}

fn is_odm_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    ODM_TYPES.iter().any(|t| media.eq_ignore_ascii_case(t))
}

/// A delivery seen for the first time: beside the other workers' jobs.
pub async fn shared(ctx: &Context, d: Inbound) {
    let fate = {
        let _shared = ctx.isolation.read().await;
        if ctx.gate.is_open() {
            let deadline = Instant::now() + ctx.settings.job_timeout;
            decide_within(ctx, &d, deadline).await
        } else {
            Fate::Postpone("database unavailable".into())
        }
    };
    ctx.settler.settle(d, fate).await;
}

/// [`decide`] by `deadline`; past it the database gate closes and the delivery is postponed.
pub async fn decide_within(ctx: &Context, d: &Inbound, deadline: Instant) -> Fate {
    let decided = decide(ctx, d, deadline).instrument(d.span.clone());
    match tokio::time::timeout_at(deadline, decided).await {
        Ok(fate) => fate,
        Err(_) => {
            ctx.gate.close("a job ran past its deadline");
            Fate::Postpone(format!(
                "job deadline of {:?} passed",
                ctx.settings.job_timeout
            ))
        }
    }
}

async fn decide(ctx: &Context, d: &Inbound, deadline: Instant) -> Fate {
    let batch = upload_batch(&d.properties);
    // What the refusal counts on: a well-formed id with a malformed size still names the batch.
    let (batch_id, batch_size) = match &batch {
        Ok(b) => (b.map(|b| b.id), b.map(|b| b.size)),
        Err(refused) => (refused.id, None),
    };
    let forms = match batch {
        Ok(batch) => {
            let registry = ctx.registry();
            read_caught(ctx, &registry, d).and_then(|forms| one_form_a_batch(batch, forms))
        }
        Err(refused) => Err(Rejected::new(RejectKind::Invalid, refused.reason)),
    };
    // Every refusal counts on the batch's receipt.
    let counted = |mut rejected: Rejected| {
        rejected.batch_id = batch_id;
        rejected.batch_size = batch_size;
        rejected
    };
    let forms = match forms {
        Ok(forms) => forms,
        Err(rejected) => return reject(ctx, d, counted(rejected), deadline).await,
    };
    let headers = d.onward_trace().as_headers();
    let message = Message {
        message_id: d.message_id.as_deref(),
        payload_sha256: &d.body_sha256,
        reply: d.reply.as_ref(),
        event_headers: &headers,
        uploaded_by: d.uploaded_by.as_deref(),
        batch: batch_id
            .zip(batch_size)
            .map(|(id, size)| UploadBatch { id, size }),
    };
    // A message of one form goes with the committer's group; several forms, a withdrawal, or a
    // record too busy to decide optimistically take a transaction of their own. What the
    // committer stores, it counts.
    let grouped = match forms.as_slice() {
        [form] => {
            let (share, committer, keys) = (&ctx.share, &ctx.committer, &ctx.pseudonymizer);
            store_grouped(share, committer, d.lane, form, &message, keys, deadline).await
        }
        _ => None,
    };
    let by_committer = grouped.is_some();
    let stored = match grouped {
        Some(stored) => stored,
        None => {
            let key_id = ctx.pseudonymizer.key_id();
            with_retries(deadline, || {
                crate::store::odm::store(&ctx.share, &forms, &message, &ctx.pseudonymizer, key_id)
            })
            .await
        }
    };
    match stored {
        Ok(Outcome::Refused(rejected)) => reject(ctx, d, counted(rejected), deadline).await,
        Ok(Outcome::Stored(outcomes)) => {
            let fate = done(ctx, d, &outcomes, by_committer);
            let to_note = match (&fate, outcomes.first()) {
                (
                    Fate::Done(Stored::Duplicate { .. }),
                    Some(&FormStored::Unchanged {
                        record_id,
                        latest,
                        own: false,
                    }),
                ) if message.reply.is_some() || message.batch.is_some() => {
                    Some((record_id, latest))
                }
                _ => None,
            };
            let Some((record_id, latest)) = to_note else {
                return fate;
            };
            let noted = with_retries(deadline, || {
                crate::store::odm::note_unchanged(&ctx.share, record_id, latest, &message)
            })
            .await;
            match noted {
                Ok(()) => fate,
                Err(e @ PersistError::Unavailable(_)) => unavailable(ctx, e),
                Err(other) => Fate::Postpone(other.to_string()),
            }
        }
        Err(e @ PersistError::Unavailable(_)) => unavailable(ctx, e),
        Err(PersistError::Permanent(reason)) => {
            let r = labelled(RejectKind::Failed, reason, &forms);
            reject(ctx, d, counted(r), deadline).await
        }
        Err(PersistError::Retryable(reason)) | Err(PersistError::Contention(reason)) => {
            let failed = d.failed_attempts.saturating_add(1);
            if failed < ctx.settings.retry.max_attempts {
                return Fate::Retry { failed, reason };
            }
            let reason = format!("{reason}; gave up after {failed} attempts");
            let r = labelled(RejectKind::Failed, reason, &forms);
            with_attempts(reject(ctx, d, counted(r), deadline).await, failed)
        }
    }
}

/// A batch's size counts form instances, and each message's outcome counts once on its receipt:
/// a message that names a batch holds one form instance, as `odm import` publishes them.
fn one_form_a_batch(
    batch: Option<UploadBatch>,
    forms: Vec<OdmForm>,
) -> Result<Vec<OdmForm>, Rejected> {
    match (batch, forms.len()) {
        (Some(_), n @ 2..) => Err(labelled(
            RejectKind::Invalid,
            format!(
                "the message names an upload batch ({H_BATCH_ID}) and holds {n} form \
                 instances: a batch counts form instances, one message each"
            ),
            &forms,
        )),
        _ => Ok(forms),
    }
}

/// A refusal of the whole message, naming its first record.
fn labelled(kind: RejectKind, reason: String, forms: &[OdmForm]) -> Rejected {
    let mut r = Rejected::new(kind, reason);
    r.record_id = forms.first().map(|f| f.record_id);
    r
}

/// Committed: each stored version counted (unless `counted` already, by the committer); the
/// delivery is a duplicate when no form stored one, queried when any version stored is.
fn done(ctx: &Context, d: &Inbound, outcomes: &[FormStored], counted: bool) -> Fate {
    let statuses: Vec<Status> = outcomes
        .iter()
        .filter_map(|o| match o {
            FormStored::Version { status, .. } => Some(*status),
            FormStored::Unchanged { .. } => None,
        })
        .collect();
    if !counted {
        for status in &statuses {
            ctx.stats.stored(*status);
        }
    }
    tracing::debug!(parent: &d.span, forms = outcomes.len(), created = statuses.len(),
        "ODM message stored");
    if statuses.is_empty() {
        Fate::Done(Stored::Duplicate { reupload: false })
    } else if statuses.contains(&Status::Queried) {
        Fate::Done(Stored::Created(Status::Queried))
    } else {
        Fate::Done(Stored::Created(Status::Accepted))
    }
}

/// [`read`], a panic caught and made the delivery's own refusal.
fn read_caught(ctx: &Context, registry: &Registry, d: &Inbound) -> Result<Vec<OdmForm>, Rejected> {
    let _in_job = d.span.enter();
    let run = || {
        #[cfg(feature = "fault-injection")]
        crate::fault::inject(&d.body);
        read(ctx, registry, d)
    };
    match std::panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(read) => read,
        Err(panic) => Err(Rejected::new(
            RejectKind::Panic,
            panic_reason(&*panic, &d.body),
        )),
    }
}

/// The pure part: the delivery's forms mapped, or the refusal of the whole message.
fn read(ctx: &Context, registry: &Registry, d: &Inbound) -> Result<Vec<OdmForm>, Rejected> {
    if let Some(why) = super::job::refused_properties(ctx, d) {
        return Err(Rejected::new(RejectKind::Invalid, why));
    }
    let max = ctx.settings.max_message_bytes;
    if d.body.len() > max {
        return Err(Rejected::new(
            RejectKind::TooLarge,
            format!(
                "body of {} bytes exceeds max_message_bytes ({max})",
                d.body.len()
            ),
        ));
    }
    let reader = ClinicalReader::new(&d.body[..], Limits::from(&ctx.settings.odm));
    let mut forms = Vec::new();
    for (i, read) in reader.enumerate() {
        let n = i + 1;
        let instance = match read {
            Ok(instance) => instance,
            Err(ReadError::File(e)) => {
                return Err(Rejected::new(
                    RejectKind::Malformed,
                    format!("the ODM document is refused: {e}"),
                ));
            }
            Err(ReadError::Form(e)) => {
                return Err(Rejected::new(
                    RejectKind::Invalid,
                    format!("form {n} of the message: {e}"),
                ));
            }
        };
        let form = odm::map(&instance, registry, &ctx.pseudonymizer).map_err(|refusal| {
            let mut r = refusal.rejected();
            r.reason = format!("form {n} of the message: {}", r.reason);
            r
        })?;
        forms.push(form);
    }
    if forms.is_empty() {
        return Err(Rejected::new(
            RejectKind::Invalid,
            "the ODM document holds no form instance (FormData)",
        ));
    }
    Ok(forms)
}

#[cfg(test)]
mod tests {
    use super::is_odm_type;

    #[test]
    fn odm_content_types_are_told_by_their_media_type_in_any_case() {
        for t in [
            "application/xml",
            "application/vnd.cdisc.odm+xml",
            "Application/XML; charset=utf-8",
            " application/vnd.cdisc.odm+xml ;charset=\"UTF-8\"",
        ] {
            assert!(is_odm_type(t), "{t}");
        }
        for t in [
            "application/json",
            "",
            "text/xml",
            "application/xml-dtd",
            "application/xmlx",
            "application/json; x=application/xml",
        ] {
            assert!(!is_odm_type(t), "{t}");
        }
    }
}
