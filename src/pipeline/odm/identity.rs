//! Which record a form instance is: its `record_id`, derived from what identifies it in every
//! export of the same data, so that importing a file twice names the same records and two repeats
//! of one form name two.
//!
//! `record_id = UUIDv5(RECORD_NAMESPACE, name)`, where `name` is the study, the subject, the visit,
//! the visit's repeat key, the form and the form's repeat key, each written as its length in bytes
//! (8 bytes, big-endian) then its UTF-8 bytes: no two different lists of fields give the same
//! name, whatever characters the fields hold. The fields are those the record is stored under:
//! the study and form as the protocol names them (the file's OIDs), the visit after
//! `odm.default_visit` applied, a repeat key absent from the file as `"1"`, and the subject as
//! stored (its pseudonym when the study says `odm.subject_key: pseudonymise`).

use uuid::{Uuid, uuid};

use super::super::deidentify::PSEUDONYM_PREFIX;
use super::super::key::Pseudonymizer;
use crate::protocol::SubjectKey;

/// The namespace of every ODM record id. Fixed for good: changing it (or the name's layout) would
/// give every ODM record a new identity, so re-imports would store copies instead of nothing.
pub const RECORD_NAMESPACE: Uuid = uuid!("cab063c9-fbc9-433f-9756-f4fe939d9e1b");

/// The repeat key of an event, form or group row that the file gives none for.
pub const DEFAULT_REPEAT_KEY: &str = "1";

/// The identifying fields of a record, as stored.
#[derive(Clone, Copy)]
pub struct RecordKey<'a> {
    pub study: &'a str,
    pub subject: &'a str,
    pub visit: &'a str,
    pub visit_repeat: &'a str,
    pub form: &'a str,
    pub form_repeat: &'a str,
}

impl RecordKey<'_> {
    /// See the module's text.
    pub fn record_id(&self) -> Uuid {
        let fields = [
            self.study,
            self.subject,
            self.visit,
            self.visit_repeat,
            self.form,
            self.form_repeat,
        ];
        let mut name = Vec::with_capacity(fields.iter().map(|f| 8 + f.len()).sum());
        for field in fields {
            name.extend_from_slice(&(field.len() as u64).to_be_bytes());
            name.extend_from_slice(field.as_bytes());
        }
        Uuid::new_v5(&RECORD_NAMESPACE, &name)
    }
}

/// The field a SubjectKey's pseudonym is keyed under.
pub const SUBJECT_KEY_FIELD: &str = "subject_key";

/// The subject as stored: the SubjectKey itself, or `psn:` and its keyed pseudonym. The key is
/// pseudonymised byte for byte (as hex, which no normalisation changes): two keys that differ
/// in case or spacing are two subjects, as they are when kept.
pub fn subject(key: &str, mode: SubjectKey, pseudonymizer: &Pseudonymizer) -> String {
    match mode {
        SubjectKey::Keep => key.to_string(),
        SubjectKey::Pseudonymise => format!(
            "{PSEUDONYM_PREFIX}{}",
            pseudonymizer.pseudonym(SUBJECT_KEY_FIELD, &crate::pipeline::hex(key.as_bytes()))
        ),
    }
}
