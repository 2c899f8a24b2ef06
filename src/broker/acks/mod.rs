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

use super::in_session;
use crate::lane::Lane;
use crate::stats::Stats;

mod ledger;
use ledger::{Ledger, one};

/// The longest a settled delivery waits for an earlier one before it is acked alone.
pub const HOLD: Duration = Duration::from_millis(100);

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
        let result = in_session(&self.broken, self.limit, what, op).await;
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
