//! Acknowledgements of one session's consumer channel: in order, and coalesced.
//!
//! Every ack and nack of the channel is sent by one task, so they reach the broker in the order they
//! were decided. A delivery settled by its worker is acked as soon as every delivery before it on the
//! channel is settled too, all of them with one `multiple` ack. That is safe only because the run is
//! checked tag by tag: the broker numbers a channel's deliveries 1, 2, 3..., and a `multiple` ack of
//! tag T goes out only when every tag from the lowest one not yet settled up to T is known here and
//! settled (acked now, or already acked or given back). A delivery the workers have not taken yet is
//! unknown here, so it is never acked by a neighbour's `multiple`.
//!
//! A settled delivery whose predecessor is still in a job waits at most [`HOLD`] and is then acked
//! alone, so one slow job never holds the others' acks; behind a tag not taken yet it is acked alone
//! at once. So is a delivery that was copied elsewhere (to the dead-letter queue, to a delay queue):
//! the copy is out, and a redelivery would make a second one. Nacks (a message given back) go out at
//! once, alone. While one ack is on its way, the next settlements gather: the busier the workers,
//! the more one ack covers.
//!
//! Nothing waits for an ack: the worker has committed before it settles, and an ack that never
//! arrives only means a redelivery, which is recognised as a duplicate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::amqp;
use crate::consumer::Lane;
use crate::stats::Stats;

/// The longest a settled delivery waits for an earlier one before it is acked alone.
pub const HOLD: Duration = Duration::from_millis(100);

/// Past this many tags tracked, the ones already settled at the broker are forgotten. That only ends
/// coalescing across the oldest gap (a tag that never reached a worker): acks go out alone from then
/// on, exactly as without this module.
const TRACKED_MAX: usize = 4096;

enum Msg {
    /// A worker took the delivery.
    Taken(u64, Lane),
    /// Ack it (its data committed, or its dead letter or delayed copy was confirmed); the flag: at
    /// once, not held back for a `multiple` ack.
    Ack(u64, Acker, bool),
    /// Give it back to the queue.
    Requeue(u64, Acker),
    /// Send every settled ack now, then answer.
    Flush(oneshot::Sender<()>),
}

/// The sending side, held by the session's handle.
pub struct Acks {
    tx: mpsc::UnboundedSender<Msg>,
    unacked: Arc<[AtomicUsize; 2]>,
}

impl Acks {
    /// Starts the session's ack task. `broken` and `limit` bound each ack as every other broker
    /// operation of the session (see `SessionHandle`).
    pub fn start(broken: CancellationToken, limit: Duration, stats: Arc<Stats>) -> Acks {
        let (tx, rx) = mpsc::unbounded_channel();
        let unacked: Arc<[AtomicUsize; 2]> = Arc::default();
        let task = Task {
            ledger: Ledger::new(),
            unacked: unacked.clone(),
            broken,
            limit,
            stats,
        };
        tokio::spawn(task.run(rx));
        Acks { tx, unacked }
    }

    /// A worker took this delivery (before it can settle it).
    pub fn taken(&self, tag: u64, lane: Lane) {
        self.unacked[lane as usize].fetch_add(1, Relaxed);
        self.send(Msg::Taken(tag, lane));
    }

    /// Deliveries of the lane taken and not yet acked or given back.
    pub fn unacked(&self, lane: Lane) -> usize {
        self.unacked[lane as usize].load(Relaxed)
    }

    pub fn ack(&self, acker: &Acker, tag: u64) {
        self.send(Msg::Ack(tag, acker.clone(), false));
    }

    /// Acks without waiting for earlier deliveries (one copied elsewhere: see the module's text).
    pub fn ack_now(&self, acker: &Acker, tag: u64) {
        self.send(Msg::Ack(tag, acker.clone(), true));
    }

    pub fn requeue(&self, acker: &Acker, tag: u64) {
        self.send(Msg::Requeue(tag, acker.clone()));
    }

    /// Returns once every ack decided so far has been sent (or has failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        self.send(Msg::Flush(done));
        let _ = wait.await;
    }

    fn send(&self, msg: Msg) {
        if self.tx.send(msg).is_err() {
            // Only if the task ended, with its session: the broker returns the message anyway.
            debug!("ack task gone; the message returns to the queue with its channel");
        }
    }
}

/// What the task knows of the channel's delivery tags, and what to send: the decisions alone, no
/// I/O (`A` is the handle an ack is sent with).
struct Ledger<A> {
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
struct Frame<A> {
    acker: A,
    tag: u64,
    multiple: bool,
    lanes: [usize; 2],
}

impl<A> Ledger<A> {
    fn new() -> Ledger<A> {
        Ledger {
            tags: BTreeMap::new(),
            next: 1,
        }
    }

    fn taken(&mut self, tag: u64, lane: Lane) {
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

    fn settled(&mut self, tag: u64, acker: A, at_once: bool, now: Instant) {
        let state = State::Settled {
            acker,
            lane: self.lane_of(tag),
            since: now,
            at_once,
        };
        self.tags.insert(tag, state);
    }

    /// The tag was given back (its nack is being sent). Returns its lane if a worker had taken it.
    fn given_back(&mut self, tag: u64) -> Option<Lane> {
        let lane = self.lane_of(tag);
        self.tags.insert(tag, State::Gone);
        lane
    }

    /// When the oldest held ack was settled.
    fn oldest_held(&self) -> Option<Instant> {
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
    fn due(&mut self, now: Instant, force: bool) -> Vec<Frame<A>> {
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
fn one(lane: Option<Lane>) -> [usize; 2] {
    let mut lanes = [0; 2];
    if let Some(lane) = lane {
        lanes[lane as usize] = 1;
    }
    lanes
}

struct Task {
    ledger: Ledger<Acker>,
    unacked: Arc<[AtomicUsize; 2]>,
    broken: CancellationToken,
    limit: Duration,
    stats: Arc<Stats>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut flushes = Vec::new();
        loop {
            // Some(message), or Some(None) when the oldest held ack has waited HOLD; None when the
            // session's handle is gone.
            let first = match self.ledger.oldest_held() {
                Some(since) => tokio::select! {
                    msg = rx.recv() => msg.map(Some),
                    _ = tokio::time::sleep_until(since + HOLD) => Some(None),
                },
                None => rx.recv().await.map(Some),
            };
            let Some(first) = first else {
                // Nothing more will settle: send what is held.
                self.send_due(true).await;
                return;
            };
            // Everything that arrived meanwhile is decided together.
            let mut msg = first;
            let mut force = false;
            while let Some(m) = msg.take().or_else(|| rx.try_recv().ok()) {
                match m {
                    Msg::Taken(tag, lane) => self.ledger.taken(tag, lane),
                    Msg::Ack(tag, acker, at_once) => {
                        self.ledger.settled(tag, acker, at_once, Instant::now());
                    }
                    Msg::Requeue(tag, acker) => {
                        let lanes = one(self.ledger.given_back(tag));
                        self.send(&acker, tag, false, lanes, true).await;
                    }
                    Msg::Flush(done) => {
                        force = true;
                        flushes.push(done);
                    }
                }
            }
            self.send_due(force).await;
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
    }

    async fn send_due(&mut self, force: bool) {
        for f in self.ledger.due(Instant::now(), force) {
            self.send(&f.acker, f.tag, f.multiple, f.lanes, false).await;
        }
    }

    /// Sends one ack (or nack with requeue) and counts the deliveries it settles.
    async fn send(
        &self,
        acker: &Acker,
        tag: u64,
        multiple: bool,
        lanes: [usize; 2],
        requeue: bool,
    ) {
        let what = if requeue { "nack" } else { "ack" };
        let op = async {
            if requeue {
                let opts = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                acker.nack(opts).await
            } else {
                acker.ack(BasicAckOptions { multiple }).await
            }
        };
        let result = amqp::in_session(&self.broken, self.limit, what, op).await;
        for (lane, n) in lanes.iter().enumerate() {
            self.unacked[lane].fetch_sub(*n, Relaxed);
        }
        if !requeue {
            self.stats.acks.fetch_add(1, Relaxed);
        }
        if let Err(e) = result {
            // Whatever was committed stays committed: the redelivery is recognised as a duplicate.
            warn!(error = %e, delivery_tag = tag, "{what} failed; the message will come back");
        }
    }
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
