//! What happens to one message body, stage by stage.
//!
//! ```text
//! bytes --parse--> Envelope --validate--> Validated --deidentify--> Deidentified --> crate::store
//!   |                 |                       |
//!   +-- malformed, too_large, invalid --------+
//! ```
//!
//! Each stage returns a stronger type than it takes, so nothing un-validated or still identifying can
//! reach the database ([`crate::store`]). The stages are pure, synchronous functions. A stage that
//! refuses a message returns a [`Rejected`] with a [`RejectKind`] and a reason written by us: reasons
//! never quote a value from the payload, because they travel into dead-letter headers, logs and the
//! `rejections` table.
//!
//! An ODM form instance (read by `crate::odm::clinical`) takes [`odm::map`] instead of `parse`: it
//! gives the record's identity and what the form does to it (a snapshot, a merge onto the latest
//! stored state, a removal), which the store applies before the same validation.

pub mod deidentify;
pub mod identifier;
pub mod key;
pub mod odm;
pub mod parse;
#[cfg(test)]
mod properties;
pub mod validate;

use uuid::Uuid;

pub use deidentify::Deidentified;
pub use key::Pseudonymizer;
pub use parse::Envelope;
pub use validate::{Finding, Validated};

use crate::protocol::Registry;

/// Why a message was dead-lettered. The string forms are the `x-edc-error-kind` header values and the
/// `rejections.kind` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectKind {
    /// Not UTF-8 JSON, or not a JSON object.
    Malformed,
    /// Larger than `max_message_bytes`; refused before parsing.
    TooLarge,
    /// Breaks the message contract or the study protocol's structure.
    Invalid,
    /// Same (record_id, version) already stored with a different payload.
    Conflict,
    /// The job panicked.
    Panic,
    /// Any other permanent error, such as a PostgreSQL data exception, or retries exhausted.
    Failed,
    /// Killed the process `crash_limit` times; not run again.
    Poison,
}

impl RejectKind {
    pub const ALL: [RejectKind; 7] = [
        RejectKind::Malformed,
        RejectKind::TooLarge,
        RejectKind::Invalid,
        RejectKind::Conflict,
        RejectKind::Panic,
        RejectKind::Failed,
        RejectKind::Poison,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Malformed => "malformed",
            RejectKind::TooLarge => "too_large",
            RejectKind::Invalid => "invalid",
            RejectKind::Conflict => "conflict",
            RejectKind::Panic => "panic",
            RejectKind::Failed => "failed",
            RejectKind::Poison => "poison",
        }
    }
}

impl std::fmt::Display for RejectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the kind, our own words, and what we could learn of the record without trusting it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    pub kind: RejectKind,
    pub reason: String,
    pub record_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    /// The upload batch's size, when the message said it: the batch receipt needs it.
    pub batch_size: Option<u32>,
}

impl Rejected {
    pub fn new(kind: RejectKind, reason: impl Into<String>) -> Self {
        Rejected {
            kind,
            reason: reason.into(),
            record_id: None,
            batch_id: None,
            batch_size: None,
        }
    }

    /// Adds what the body says of its record and batch, read without trusting it (see
    /// [`parse::hint`]): for a refusal made without the pipeline's verdict (a panic, poison).
    pub fn hinted(mut self, body: &[u8], max_message_bytes: usize) -> Self {
        let (record_id, batch) = parse::hint(body, max_message_bytes);
        self.record_id = self.record_id.or(record_id);
        if let Some(b) = batch {
            self.batch_id = self.batch_id.or(Some(b.id));
            self.batch_size = self.batch_size.or(b.size);
        }
        self
    }

    /// A refusal of a record that was prepared: it says which record and which upload batch, so
    /// that the batch's receipt counts it.
    pub fn of_record(kind: RejectKind, reason: impl Into<String>, record: &Deidentified) -> Self {
        Rejected {
            kind,
            reason: reason.into(),
            record_id: Some(record.record_id),
            batch_id: record.batch_id,
            batch_size: record.batch_size,
        }
    }
}

/// The SHA-256 of a message body, in hex: the `payload_sha256` of a stored record, the
/// `body_sha256` of a rejection or a dead-letter action, and half the crash ledger's key.
pub fn sha256_hex(body: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(body))
}

/// `bytes` in lower-case hex: every record's body hash and each of its pseudonyms. Two table
/// lookups a byte into one buffer (`hex::encode` pushes one `char` at a time, which showed in the
/// daemon's profile).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The pure part of the pipeline: bytes in, a de-identified record (or a refusal) out.
pub fn prepare(
    body: &[u8],
    max_message_bytes: usize,
    registry: &Registry,
    pseudonymizer: &Pseudonymizer,
) -> Result<Deidentified, Rejected> {
    let envelope = parse::parse(body, max_message_bytes)?;
    let (record_id, batch) = (envelope.record_id, envelope.batch.clone());
    let validated = validate::validate(envelope, registry).map_err(|mut r| {
        r.record_id = Some(record_id);
        r.batch_id = batch.as_ref().map(|b| b.id);
        r.batch_size = batch.as_ref().and_then(|b| b.size);
        r
    })?;
    Ok(deidentify::deidentify(validated, pseudonymizer))
}
