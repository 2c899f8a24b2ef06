//! Counts over the form instances of one file (or message), for the import report: forms by study
//! and form, what they do, their transactions, where their capture times came from, and refusals
//! by reason code (the reader's and the mapping's). Keys are the protocol's names or our own
//! words: nothing a file alone brings.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{OdmForm, Refusal};

/// See the module's text. Serialises as the import report's JSON counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Forms mapped, by study, then form.
    pub forms: BTreeMap<String, BTreeMap<String, u64>>,
    /// Forms mapped, by what they do: `snapshot`, `merge`, `remove`, `context`.
    pub actions: BTreeMap<&'static str, u64>,
    /// Forms mapped, by the TransactionType in force at the form (`none` when the file gives none).
    pub transactions: BTreeMap<&'static str, u64>,
    /// Forms mapped, by where their capture time came from.
    pub capture_times: BTreeMap<&'static str, u64>,
    /// Date-times passed over because they did not read.
    pub unreadable_timestamps: u64,
    /// Forms refused, by reason code.
    pub refused: BTreeMap<&'static str, u64>,
}

impl Tally {
    /// Counts one form instance's mapping.
    pub fn add(&mut self, mapped: &Result<OdmForm, Refusal>) {
        match mapped {
            Ok(form) => {
                *self
                    .forms
                    .entry(form.study.clone())
                    .or_default()
                    .entry(form.form.clone())
                    .or_default() += 1;
                *self.actions.entry(form.delta.kind()).or_default() += 1;
                let tx = form.transaction.map_or("none", |t| t.as_str());
                *self.transactions.entry(tx).or_default() += 1;
                *self
                    .capture_times
                    .entry(form.captured_from.as_str())
                    .or_default() += 1;
                self.unreadable_timestamps += u64::from(form.unreadable_timestamps);
            }
            Err(refusal) => *self.refused.entry(refusal.code).or_default() += 1,
        }
    }

    /// Forms mapped (all studies).
    pub fn mapped(&self) -> u64 {
        self.forms.values().flat_map(|f| f.values()).sum()
    }

    /// Forms refused (every reason).
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn absorb(&mut self, other: &Tally) {
        for (study, forms) in &other.forms {
            let mine = self.forms.entry(study.clone()).or_default();
            for (form, n) in forms {
                *mine.entry(form.clone()).or_default() += n;
            }
        }
        for (mine, theirs) in [
            (&mut self.actions, &other.actions),
            (&mut self.transactions, &other.transactions),
            (&mut self.capture_times, &other.capture_times),
            (&mut self.refused, &other.refused),
        ] {
            for (k, n) in theirs {
                *mine.entry(k).or_default() += n;
            }
        }
        self.unreadable_timestamps += other.unreadable_timestamps;
    }
}
