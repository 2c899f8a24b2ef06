//! The decisions of the ack task, without any I/O: which acks to send, when, and whether one
//! `multiple` ack can cover several deliveries. `A` is the handle an ack is sent with.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::HOLD;
use crate::lane::Lane;

/// Past this many tags tracked, the ones already settled at the broker are forgotten. That only ends
/// coalescing across the oldest gap (a tag that never reached a worker): acks go out alone from then
/// on, exactly as without this module.
const TRACKED_MAX: usize = 4096;

/// What the task knows of the channel's delivery tags, and what to send: the decisions alone, no
/// I/O (`A` is the handle an ack is sent with).
pub(super) struct Ledger<A> {
    /// Tags from `next` on that are known here.
    tags: BTreeMap<u64, State<A>>,
    /// The lowest tag not known to be acked or given back.
    next: u64,
}

enum State<A> {
    /// In a job.
    Taken(Lane),
    /// Settled by its worker, ack not sent yet.
    Settled {
        acker: A,
        lane: Option<Lane>,
        since: Instant,
        at_once: bool,
    },
    /// Acked or given back already.
    Gone,
}

/// One ack frame to send, and how many deliveries of each lane it settles.
#[derive(Debug, PartialEq)]
pub(super) struct Frame<A> {
    pub acker: A,
    pub tag: u64,
    pub multiple: bool,
    pub lanes: [usize; 2],
}

impl<A> Ledger<A> {
    pub(super) fn new() -> Ledger<A> {
        Ledger {
            tags: BTreeMap::new(),
            next: 1,
        }
    }

    pub(super) fn taken(&mut self, tag: u64, lane: Lane) {
        self.tags.insert(tag, State::Taken(lane));
    }

    /// The lane of a tag a worker took and that is not acked yet.
    fn lane_of(&self, tag: u64) -> Option<Lane> {
        match self.tags.get(&tag) {
            Some(State::Taken(lane)) => Some(*lane),
            Some(State::Settled { lane, .. }) => *lane,
            _ => None,
        }
    }

    pub(super) fn settled(&mut self, tag: u64, acker: A, at_once: bool, now: Instant) {
        let state = State::Settled {
            acker,
            lane: self.lane_of(tag),
            since: now,
            at_once,
        };
        self.tags.insert(tag, state);
    }

    /// The tag was given back (its nack is being sent). Returns its lane if a worker had taken it.
    pub(super) fn given_back(&mut self, tag: u64) -> Option<Lane> {
        let lane = self.lane_of(tag);
        self.tags.insert(tag, State::Gone);
        lane
    }

    /// When the oldest held ack was settled.
    pub(super) fn oldest_held(&self) -> Option<Instant> {
        self.tags
            .values()
            .filter_map(|s| match s {
                State::Settled { since, .. } => Some(*since),
                _ => None,
            })
            .min()
    }

    /// The frames to send now, in order: one ack (`multiple` if it settles several) for the settled
    /// run from `next`; then, alone, each settled delivery that cannot join such a run soon: behind
    /// a tag no worker has taken, marked `at_once`, held for `HOLD` already, or everything if
    /// `force`. The rest stays held behind the tag in a job at the head.
    pub(super) fn due(&mut self, now: Instant, force: bool) -> Vec<Frame<A>> {
        let mut frames = Vec::new();
        let (mut run, mut settled): (Option<Frame<A>>, usize) = (None, 0);
        while let Some(entry) = self.tags.first_entry() {
            if *entry.key() != self.next || matches!(entry.get(), State::Taken(_)) {
                break;
            }
            if let State::Settled { acker, lane, .. } = entry.remove() {
                settled += 1;
                let mut lanes = run.take().map_or([0; 2], |f| f.lanes);
                if let Some(lane) = lane {
                    lanes[lane as usize] += 1;
                }
                run = Some(Frame {
                    acker,
                    tag: self.next,
                    multiple: settled > 1,
                    lanes,
                });
            }
            self.next += 1;
        }
        frames.extend(run);
        let head_in_job = matches!(
            self.tags.first_key_value(),
            Some((tag, State::Taken(_))) if *tag == self.next
        );
        let alone: Vec<u64> = self
            .tags
            .iter()
            .filter_map(|(tag, s)| match s {
                State::Settled { since, at_once, .. }
                    if force || *at_once || !head_in_job || now >= *since + HOLD =>
                {
                    Some(*tag)
                }
                _ => None,
            })
            .collect();
        for tag in alone {
            if let Some(State::Settled { acker, lane, .. }) = self.tags.insert(tag, State::Gone) {
                frames.push(Frame {
                    acker,
                    tag,
                    multiple: false,
                    lanes: one(lane),
                });
            }
        }
        if self.tags.len() > TRACKED_MAX {
            self.tags.retain(|_, s| !matches!(s, State::Gone));
        }
        frames
    }
}

/// Per lane, the one delivery settled (none if no worker had taken it).
pub(super) fn one(lane: Option<Lane>) -> [usize; 2] {
    let mut lanes = [0; 2];
    if let Some(lane) = lane {
        lanes[lane as usize] = 1;
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: Lane = Lane::Normal;
    const U: Lane = Lane::Urgent;

    fn frame(tag: u64, multiple: bool, lanes: [usize; 2]) -> Frame<u64> {
        Frame {
            acker: tag,
            tag,
            multiple,
            lanes,
        }
    }

    /// Tags 1..=n taken on the normal lane.
    fn taken(n: u64) -> Ledger<u64> {
        let mut l = Ledger::new();
        for tag in 1..=n {
            l.taken(tag, N);
        }
        l
    }

    #[test]
    fn a_settled_run_from_the_lowest_tag_goes_out_as_one_multiple_ack() {
        let (mut l, t) = (taken(4), Instant::now());
        for tag in [3, 1, 2] {
            l.settled(tag, tag, false, t);
        }
        assert_eq!(l.due(t, false), vec![frame(3, true, [0, 3])]);
        assert_eq!(l.next, 4);
        l.settled(4, 4, false, t);
        assert_eq!(
            l.due(t, false),
            vec![frame(4, false, [0, 1])],
            "one alone: no multiple"
        );
    }

    #[test]
    fn settled_deliveries_behind_one_in_a_job_wait_then_go_alone() {
        let (mut l, t) = (taken(3), Instant::now());
        l.settled(2, 2, false, t);
        l.settled(3, 3, false, t);
        assert_eq!(l.due(t, false), vec![], "held for the head");
        assert_eq!(l.oldest_held(), Some(t));
        let later = t + HOLD;
        assert_eq!(
            l.due(later, false),
            vec![frame(2, false, [0, 1]), frame(3, false, [0, 1])]
        );
        // The head settles later: it goes alone too, never as a multiple over 2 and 3 again.
        l.settled(1, 1, false, later);
        assert_eq!(l.due(later, false), vec![frame(1, false, [0, 1])]);
        assert_eq!(l.next, 4);
        assert!(l.tags.is_empty());
    }

    #[test]
    fn behind_a_tag_no_worker_took_nothing_waits_and_nothing_is_multiple() {
        // Tag 1 is still in the consumer's buffer (not taken): 2 and 3 cannot be covered.
        let mut l = Ledger::new();
        let t = Instant::now();
        for tag in [2, 3] {
            l.taken(tag, N);
            l.settled(tag, tag, false, t);
        }
        assert_eq!(
            l.due(t, false),
            vec![frame(2, false, [0, 1]), frame(3, false, [0, 1])]
        );
        assert_eq!(l.next, 1);
        // Once 1 is taken and settled, the run passes over the tags acked alone.
        l.taken(1, U);
        l.settled(1, 1, false, t);
        assert_eq!(l.due(t, false), vec![frame(1, false, [1, 0])]);
        assert_eq!(l.next, 4);
    }

    #[test]
    fn a_delivery_copied_elsewhere_is_acked_at_once() {
        let (mut l, t) = (taken(2), Instant::now());
        l.settled(2, 2, true, t);
        assert_eq!(l.due(t, false), vec![frame(2, false, [0, 1])]);
    }

    #[test]
    fn a_given_back_delivery_is_passed_over_not_acked() {
        let (mut l, t) = (taken(3), Instant::now());
        assert_eq!(l.given_back(1), Some(N));
        l.settled(2, 2, false, t);
        l.settled(3, 3, false, t);
        assert_eq!(l.due(t, false), vec![frame(3, true, [0, 2])]);
        assert_eq!(l.given_back(9), None, "never taken: not counted");
    }

    #[test]
    fn force_sends_everything_settled() {
        let (mut l, t) = (taken(3), Instant::now());
        l.settled(3, 3, false, t);
        assert_eq!(l.due(t, true), vec![frame(3, false, [0, 1])]);
        assert_eq!(l.oldest_held(), None);
    }

    #[test]
    fn forgetting_old_tags_never_lets_a_multiple_ack_cross_a_gap() {
        // Tag 1 never taken; many acked alone behind it, then forgotten.
        let mut l = Ledger::new();
        let t = Instant::now();
        let last = TRACKED_MAX as u64 + 10;
        for tag in 2..=last {
            l.taken(tag, N);
            l.settled(tag, tag, false, t);
        }
        assert_eq!(l.due(t, false).len(), (last - 1) as usize);
        assert!(l.tags.is_empty(), "forgotten past TRACKED_MAX");
        l.taken(1, N);
        l.taken(last + 1, N);
        l.settled(1, 1, false, t);
        l.settled(last + 1, last + 1, false, t);
        // 1 alone; last + 1 alone too: the tags between are no longer known, so no run reaches it.
        assert_eq!(
            l.due(t, false),
            vec![frame(1, false, [0, 1]), frame(last + 1, false, [0, 1])]
        );
    }
}
