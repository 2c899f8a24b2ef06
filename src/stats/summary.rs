//! The counters as the shutdown summary prints them, and as the tests read them: a copy taken at
//! one moment.

use crate::pipeline::RejectKind;

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub accepted: u64,
    pub queried: u64,
    pub duplicate: u64,
    pub requeued: u64,
    pub postponed: u64,
    pub retried: u64,
    pub groups: u64,
    pub grouped_records: u64,
    pub group_splits: u64,
    pub acks: u64,
    pub dead_lettered: Vec<(RejectKind, u64)>,
}

impl Summary {
    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered.iter().map(|(_, n)| n).sum()
    }

    /// Messages settled for good (acked): stored, duplicate or dead-lettered.
    pub fn settled(&self) -> u64 {
        self.accepted + self.queried + self.duplicate + self.dead_lettered_total()
    }

    pub fn dead_lettered_of(&self, kind: RejectKind) -> u64 {
        self.dead_lettered
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(0, |(_, n)| *n)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "accepted={} queried={} duplicate={} dead_lettered={}",
            self.accepted,
            self.queried,
            self.duplicate,
            self.dead_lettered_total()
        )?;
        let kinds: Vec<String> = self
            .dead_lettered
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if !kinds.is_empty() {
            write!(f, " ({})", kinds.join(" "))?;
        }
        write!(
            f,
            " retried={} postponed={} requeued={} acks={}",
            self.retried, self.postponed, self.requeued, self.acks
        )
    }
}
