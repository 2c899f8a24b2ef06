//! The import report: what was read, published and refused, as text for a person and as one JSON
//! document (`--output json`, the same fields).
//!
//! Everything in it is our words, the protocol's names (studies, forms, check ids), counts and
//! positions; namespaces of vendor extensions are the file's, printed escaped. No value, subject
//! key, repeat key or free text of the file is ever in it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::odm::model::{Position, Skipped};
use crate::pipeline::odm::Tally;
use crate::printable::Printable;

/// Refusals listed one by one (with line and column); past this many, they are only counted.
pub const MAX_LISTED: usize = 100;

/// Where the whole file was refused, or where one form was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Located {
    pub line: u64,
    pub column: u64,
    /// A stable name of the reason (for a form: the count's key in `refused`).
    pub code: &'static str,
    /// Our words, with the position.
    pub reason: String,
}

impl Located {
    pub fn new(at: Position, code: &'static str, reason: String) -> Located {
        Located {
            line: at.line,
            column: at.column,
            code,
            reason,
        }
    }
}

/// What a dry run's validation made of the forms it validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Validation {
    /// Every check passed.
    pub valid: u64,
    /// Stored as `queried`: at least one soft check failed.
    pub queried: u64,
    /// Refused (counted in `refused` as `invalid`).
    pub invalid: u64,
    /// Removals and Context forms: nothing to validate without the stored state.
    pub not_validated: u64,
    /// Soft findings, by check id (or item name).
    pub findings: BTreeMap<String, u64>,
}

/// Read past and counted (see [`Skipped`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SkippedCounts {
    pub extension_elements: BTreeMap<String, u64>,
    pub extension_attributes: BTreeMap<String, u64>,
    pub odm_elements: BTreeMap<String, u64>,
}

impl From<&Skipped> for SkippedCounts {
    fn from(s: &Skipped) -> SkippedCounts {
        SkippedCounts {
            extension_elements: s.extension_elements.clone(),
            extension_attributes: s.extension_attributes.clone(),
            odm_elements: s
                .odm_elements
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }
}

/// See the module's text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The file's size and modification time when the first pass opened it.
    #[serde(skip)]
    pub(crate) stamp: Option<super::Stamp>,
    pub dry_run: bool,
    /// Set when the file itself was refused: then nothing was published.
    pub file_refused: Option<Located>,
    /// Bytes of the file read.
    pub bytes: u64,
    pub subjects: u64,
    /// Form instances (FormData) read, refused ones included.
    pub forms_read: u64,
    /// Forms that passed: those a real import publishes.
    pub publishable: u64,
    /// Forms published and confirmed by the broker (none in a dry run).
    pub published: u64,
    /// The queue published to, and the upload batch (`batch status` reads its receipt).
    pub queue: Option<String>,
    pub batch_id: Option<String>,
    /// Forms by study and form, by action, by transaction, by source of the capture time; forms
    /// refused by reason code.
    #[serde(flatten)]
    pub tally: Tally,
    /// The first [`MAX_LISTED`] refusals, in file order.
    pub refusals: Vec<Located>,
    pub refusals_not_listed: u64,
    /// A dry run's validation.
    pub validation: Option<Validation>,
    pub skipped: SkippedCounts,
    /// Subject and event AuditRecords that came after forms they would have applied to.
    pub late_audit_records: u64,
    /// How something was read (our words).
    pub notes: Vec<String>,
}

impl Report {
    /// Counts and lists one refused form.
    pub fn refuse(&mut self, refusal: Located) {
        *self.tally.refused.entry(refusal.code).or_default() += 1;
        if self.refusals.len() < MAX_LISTED {
            self.refusals.push(refusal);
        } else {
            self.refusals_not_listed += 1;
        }
    }

    /// 0: every form was published (or, in a dry run, would be); 2: the file was refused, nothing
    /// published; 1: some forms were refused (the others published).
    pub fn exit_code(&self) -> u8 {
        if self.file_refused.is_some() {
            2
        } else if self.tally.refused_total() > 0 || self.published < self.publishable_goal() {
            1
        } else {
            0
        }
    }

    /// What had to be published for the import to be complete.
    fn publishable_goal(&self) -> u64 {
        if self.dry_run { 0 } else { self.publishable }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// For a person: one fact a line, the counts in a fixed order.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let mode = if self.dry_run {
            "odm import --dry-run"
        } else {
            "odm import"
        };
        let _ = writeln!(
            t,
            "{mode}: {} bytes, {} subjects, {} forms read",
            self.bytes, self.subjects, self.forms_read
        );
        if let Some(r) = &self.file_refused {
            let _ = writeln!(t, "file refused ({}): {}", r.code, r.reason);
            let _ = writeln!(t, "nothing was published");
        } else if self.dry_run {
            let _ = writeln!(
                t,
                "{} forms would be published (dry run: nothing was published)",
                self.publishable
            );
        } else {
            let to = self.queue.as_deref().unwrap_or("-");
            let _ = writeln!(
                t,
                "{} of {} forms published to {to} (confirmed by the broker)",
                self.published, self.publishable
            );
        }
        if let Some(b) = &self.batch_id {
            let _ = writeln!(t, "batch {b} (edc-ingest batch status {b})");
        }
        if !self.tally.forms.is_empty() {
            let _ = writeln!(t, "forms by study and form:");
            for (study, forms) in &self.tally.forms {
                for (form, n) in forms {
                    let _ = writeln!(t, "  {study}  {form}  {n}");
                }
            }
        }
        line(&mut t, "transactions", &self.tally.transactions);
        line(&mut t, "actions", &self.tally.actions);
        line(&mut t, "capture times", &self.tally.capture_times);
        if self.tally.unreadable_timestamps > 0 {
            let _ = writeln!(
                t,
                "unreadable date-times passed over: {}",
                self.tally.unreadable_timestamps
            );
        }
        if let Some(v) = &self.validation {
            let _ = writeln!(
                t,
                "validation: {} valid, {} queried, {} invalid, {} not validated (removals and Context)",
                v.valid, v.queried, v.invalid, v.not_validated
            );
            line(&mut t, "findings by check", &v.findings);
        }
        let refused = self.tally.refused_total();
        let _ = write!(t, "refused: {refused}");
        if refused > 0 {
            let by: Vec<String> = self
                .tally
                .refused
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = write!(t, " ({})", by.join(", "));
        }
        t.push('\n');
        for r in &self.refusals {
            // The reason starts with the form's line and column.
            let _ = writeln!(t, "  {}: {}", r.code, r.reason);
        }
        if self.refusals_not_listed > 0 {
            let _ = writeln!(t, "  ... and {} more", self.refusals_not_listed);
        }
        let s = &self.skipped;
        shown_line(&mut t, "skipped extension elements", &s.extension_elements);
        shown_line(
            &mut t,
            "skipped extension attributes",
            &s.extension_attributes,
        );
        line(&mut t, "skipped ODM elements", &s.odm_elements);
        if self.late_audit_records > 0 {
            let _ = writeln!(
                t,
                "late AuditRecords (after the forms they would apply to, not applied): {}",
                self.late_audit_records
            );
        }
        for note in &self.notes {
            let _ = writeln!(t, "note: {note}");
        }
        t
    }
}

/// `what: a 1, b 2` for counts keyed by our names or the protocol's.
fn line<K: std::fmt::Display>(t: &mut String, what: &str, counts: &BTreeMap<K, u64>) {
    if counts.is_empty() {
        return;
    }
    let by: Vec<String> = counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(t, "{what}: {}", by.join(", "));
}

/// As [`line`], for keys the file chose (namespaces): escaped.
fn shown_line(t: &mut String, what: &str, counts: &BTreeMap<String, u64>) {
    if counts.is_empty() {
        return;
    }
    let by: Vec<String> = counts
        .iter()
        .map(|(k, n)| format!("{:?} {n}", Printable(k)))
        .collect();
    let _ = writeln!(t, "{what}: {}", by.join(", "));
}

#[cfg(test)]
mod tests;
