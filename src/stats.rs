//! Counters of what became of each message, for the shutdown summary and the tests.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::pipeline::RejectKind;

#[derive(Default, Debug)]
pub struct Stats {
    pub accepted: AtomicU64,
    pub queried: AtomicU64,
    pub duplicate: AtomicU64,
    /// Given back to the queue unstarted (shutdown, a database pause).
    pub requeued: AtomicU64,
    /// Sent round a short delay queue: the database was unavailable or the job ran out of time.
    pub postponed: AtomicU64,
    /// Parked in a delay queue for a later attempt.
    pub retried: AtomicU64,
    /// Transactions that stored several records at once (group commit).
    pub groups: AtomicU64,
    /// Records stored by those transactions.
    pub grouped_records: AtomicU64,
    /// Groups split in two after their statement failed, to isolate a bad record.
    pub group_splits: AtomicU64,
    /// Ack frames sent; one `multiple` ack settles many deliveries.
    pub acks: AtomicU64,
    /// Messages whose `reply_to` is not an allowed reply address (no answer was sent).
    pub reply_to_refused: AtomicU64,
    /// Events and callbacks the relay published (confirmed).
    pub events_published: AtomicU64,
    /// Events and callbacks the broker refused, parked in `outbox_parked`.
    pub events_parked: AtomicU64,
    dead_lettered: [AtomicU64; RejectKind::ALL.len()],
}

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

impl Stats {
    /// A transaction that stored `records` records.
    pub fn record_group(&self, records: usize) {
        if records > 1 {
            self.groups.fetch_add(1, Relaxed);
            self.grouped_records.fetch_add(records as u64, Relaxed);
        }
    }

    pub fn dead_lettered(&self, kind: RejectKind) {
        self.dead_lettered[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn summary(&self) -> Summary {
        Summary {
            accepted: self.accepted.load(Relaxed),
            queried: self.queried.load(Relaxed),
            duplicate: self.duplicate.load(Relaxed),
            requeued: self.requeued.load(Relaxed),
            postponed: self.postponed.load(Relaxed),
            retried: self.retried.load(Relaxed),
            groups: self.groups.load(Relaxed),
            grouped_records: self.grouped_records.load(Relaxed),
            group_splits: self.group_splits.load(Relaxed),
            acks: self.acks.load(Relaxed),
            dead_lettered: RejectKind::ALL
                .iter()
                .map(|k| (*k, self.dead_lettered[*k as usize].load(Relaxed)))
                .collect(),
        }
    }
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
