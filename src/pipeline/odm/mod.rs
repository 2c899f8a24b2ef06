//! An ODM form instance mapped to what the store takes: pure, no I/O.
//!
//! ```text
//! odm::clinical::ClinicalReader --FormInstance--> map --OdmForm--> (the store: merge, validate, de-identify, version)
//!                                                  |
//!                                                  +-- Refusal (kind, code, reason naming the form by position)
//! ```
//!
//! [`map`] does, in order:
//! 1. the study: `ClinicalData/@StudyOID` must be a study of the registry;
//! 2. the capture time ([`capture`]: the nearest AuditRecord, the latest inside the form, the
//!    file's AsOfDateTime, its CreationDateTime; none: refused), which picks the protocol version
//!    in force, as `captured_at` does for JSON;
//! 3. the site (`SiteRef/@LocationOID`, else the protocol's `odm.default_site`), the visit
//!    (`StudyEventOID`, else `odm.default_visit`) and the form (`FormOID`), each one of the
//!    protocol's;
//! 4. the identity ([`identity`]): the subject as stored (its pseudonym when the study says
//!    `odm.subject_key: pseudonymise`), repeat keys (`"1"` when absent), `record_id`;
//! 5. the items ([`items`]) into an [`OdmDelta`]: a snapshot, a merge, a removal or nothing.
//!
//! What it does not do: the soft rules and checks (required items, ranges, codes, CEL checks),
//! which need the whole form: the store applies the delta to the latest stored state with
//! [`apply`] and validates the result with `validate::validate_items` (`OdmForm::context` gives
//! the context); `odm import --dry-run`, which has no stored state, validates `apply(&Value::Null,
//! &delta)`. Nor de-identification: `phi` values in the delta are as the file gave them.
//!
//! Reasons are ours: they name the form by its position and its FormOID (escaped through
//! [`Printable`]), items by the protocol's names and positions, and never hold a value, a subject
//! key, a repeat key or free text.

pub mod capture;
pub mod correct;
pub mod delta;
pub mod identity;
pub mod items;
mod tally;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_correct;
#[cfg(test)]
mod tests_delta;
#[cfg(test)]
mod tests_fixtures;
#[cfg(test)]
mod tests_items;
#[cfg(test)]
mod tests_props;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use uuid::Uuid;

pub use capture::{CaptureSource, UNKNOWN_USER};
pub use delta::{ItemChange, Merge, OdmDelta, RowChange, apply};
pub use identity::{DEFAULT_REPEAT_KEY, RECORD_NAMESPACE, RecordKey};
pub use tally::Tally;

use super::key::Pseudonymizer;
use super::validate::RecordContext;
use super::{RejectKind, Rejected};
use crate::odm::model::{FormInstance, Position, TransactionType};
use crate::printable::Printable;
use crate::protocol::{Protocol, Registry};

/// The upload batch an ODM message names in its headers (`edc-batch-id`, `edc-batch-size`: see
/// `broker::inbound`): every version it stores, or its refusal, counts on that batch's receipt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadBatch {
    pub id: Uuid,
    /// The number of form instances in the batch, 1 to `i32::MAX`.
    pub size: u32,
}

/// A form instance mapped: the record's identity and context, and what it does to the record.
/// `Debug` hides the subject, the reason for change and every value.
#[derive(Clone)]
pub struct OdmForm {
    pub record_id: Uuid,
    /// The protocol version in force on the capture date (its `version` names it).
    pub protocol: Arc<Protocol>,
    pub study: String,
    pub site: String,
    /// The SubjectKey, or `psn:` and its pseudonym (see [`identity::subject`]).
    pub subject: String,
    pub visit: String,
    /// `StudyEventRepeatKey`, `"1"` when absent: uploader text, stored, never printed.
    pub visit_repeat: String,
    pub form: String,
    /// `FormRepeatKey`, `"1"` when absent: uploader text, stored, never printed.
    pub form_repeat: String,
    pub captured_at: DateTime<FixedOffset>,
    pub captured_from: CaptureSource,
    /// Date-times in scope that did not read (passed over when choosing `captured_at`).
    pub unreadable_timestamps: u32,
    /// The UserOID of the AuditRecord in scope, else [`UNKNOWN_USER`]. Uploader text.
    pub entered_by: String,
    /// Free text the file carries: protected (store its pseudonym; never log it).
    pub reason_for_change: Option<String>,
    /// The TransactionType in force at the form (its own, else its event's or subject's).
    pub transaction: Option<TransactionType>,
    pub delta: OdmDelta,
    /// The start of the FormData element.
    pub at: Position,
}

impl OdmForm {
    /// What validation and checks see of the record (`study`, `site`, `visit`, `form`).
    pub fn context(&self) -> RecordContext<'_> {
        RecordContext {
            study: &self.study,
            site: &self.site,
            visit: &self.visit,
            form: &self.form,
        }
    }
}

impl fmt::Debug for OdmForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OdmForm")
            .field("record_id", &self.record_id)
            .field("protocol_version", &self.protocol.version)
            .field("study", &self.study)
            .field("site", &self.site)
            .field("subject", &"<redacted>")
            .field("visit", &self.visit)
            .field("form", &self.form)
            .field("captured_at", &self.captured_at)
            .field("captured_from", &self.captured_from)
            .field("transaction", &self.transaction)
            .field(
                "reason_for_change",
                &self.reason_for_change.as_ref().map(|_| "<redacted>"),
            )
            .field("delta", &self.delta)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// A form instance refused by the mapping. The rest of the file (or message) is another matter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RejectKind,
    /// A short stable name of the reason, for counting: `unknown_study`, `no_capture_time`,
    /// `no_protocol_in_force`, `unknown_site`, `no_site`, `unknown_visit`, `no_visit`,
    /// `unknown_form`, `undefined_items`, `misplaced_item`, `bad_value`, `binary_item`,
    /// `unit_not_accepted`, `duplicate_item`, `conflicting_row`.
    pub code: &'static str,
    /// Our words, without the form's position (see `Display` for the whole reason).
    pub reason: String,
    /// `FormData/@FormOID` as given (print it through [`Printable`] only).
    pub form_oid: String,
    pub at: Position,
    /// The record the form would have been, when its identity was established.
    pub record_id: Option<Uuid>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the form at {} (FormOID {:?}) is refused: {}",
            self.at,
            Printable(&self.form_oid),
            self.reason
        )
    }
}

impl Refusal {
    /// As the pipeline's refusal (for a dead letter, the rejections table, a batch receipt).
    pub fn rejected(&self) -> Rejected {
        let mut r = Rejected::new(self.kind, self.to_string());
        r.record_id = self.record_id;
        r
    }
}

/// Maps one form instance; see the module's text. `pseudonymizer` is used only for the subject of
/// a study that says `odm.subject_key: pseudonymise` (a dry run without the key may pass
/// [`Pseudonymizer::insecure_dev`]: only such subjects and their record ids differ).
pub fn map(
    instance: &FormInstance,
    registry: &Registry,
    pseudonymizer: &Pseudonymizer,
) -> Result<OdmForm, Refusal> {
    let refuse = |code: &'static str, reason: String| Refusal {
        kind: RejectKind::Invalid,
        code,
        reason,
        form_oid: instance.form_oid.clone(),
        at: instance.at,
        record_id: None,
    };
    if !registry.knows_study(&instance.study_oid) {
        let shown = Printable(&instance.study_oid);
        return Err(refuse(
            "unknown_study",
            format!("unknown study (StudyOID {shown:?})"),
        ));
    }
    let capture = capture::capture(instance)
        .map_err(|n| refuse("no_capture_time", capture::no_capture_reason(n)))?;
    let study = &instance.study_oid;
    let protocol = registry
        .protocol_for(study, capture.at.date_naive())
        .ok_or_else(|| {
            refuse(
                "no_protocol_in_force",
                format!("no protocol version of study {study} is in force on the capture date"),
            )
        })?
        .clone();
    let site = resolve(
        instance.site_oid.as_ref(),
        protocol.odm.default_site.as_ref(),
        |s| protocol.sites.contains(s),
    )
    .map_err(|given| match given {
        true => refuse(
            "unknown_site",
            format!("site is not one of study {study}'s sites"),
        ),
        false => refuse(
            "no_site",
            format!(
                "the form names no site (no SiteRef) and study {study} sets no odm.default_site"
            ),
        ),
    })?;
    let visit = resolve(
        instance.event_oid.as_ref(),
        protocol.odm.default_visit.as_ref(),
        |v| protocol.visits.contains(v),
    )
    .map_err(|given| match given {
        true => refuse(
            "unknown_visit",
            format!("visit is not one of study {study}'s visits"),
        ),
        false => refuse(
            "no_visit",
            format!(
                "the form names no visit (no StudyEventData) and study {study} sets no \
                 odm.default_visit"
            ),
        ),
    })?;
    let Some((form_name, form)) = protocol.forms.get_key_value(&instance.form_oid) else {
        return Err(refuse(
            "unknown_form",
            format!("form is not one of study {study}'s forms"),
        ));
    };
    let subject = identity::subject(
        &instance.subject_key,
        protocol.odm.subject_key,
        pseudonymizer,
    );
    // An empty key is absent, as the reader has it.
    let repeat = |key: &Option<String>| {
        key.clone()
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| DEFAULT_REPEAT_KEY.to_string())
    };
    let (visit_repeat, form_repeat) = (
        repeat(&instance.event_repeat),
        repeat(&instance.form_repeat),
    );
    let record_id = RecordKey {
        study,
        subject: &subject,
        visit: &visit,
        visit_repeat: &visit_repeat,
        form: form_name,
        form_repeat: &form_repeat,
    }
    .record_id();
    let delta = items::delta(instance, form, form_name, study).map_err(|p| Refusal {
        record_id: Some(record_id),
        ..refuse(p.code, p.reason)
    })?;
    Ok(OdmForm {
        record_id,
        study: study.clone(),
        site,
        subject,
        visit,
        visit_repeat,
        form: form_name.clone(),
        form_repeat,
        captured_at: capture.at,
        captured_from: capture.source,
        unreadable_timestamps: capture.unreadable,
        entered_by: capture.entered_by,
        reason_for_change: capture.reason_for_change,
        transaction: items::form_transaction(instance),
        delta,
        at: instance.at,
        protocol,
    })
}

/// What the file gives, else the protocol's default, if it is one of the protocol's. `Err(true)`:
/// the value in force is not one of them; `Err(false)`: there is none.
fn resolve(
    given: Option<&String>,
    default: Option<&String>,
    known: impl Fn(&String) -> bool,
) -> Result<String, bool> {
    match given.or(default) {
        Some(v) if known(v) => Ok(v.clone()),
        Some(_) => Err(true),
        None => Err(false),
    }
}
