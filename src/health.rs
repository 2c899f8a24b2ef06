//! Whether the daemon is alive and whether it is ready: what `/livez` and `/readyz` answer, and the
//! `edc_ready`, `edc_broker_connected` and `edc_db_gate_open` gauges.
//!
//! It sits at the bottom of the layout so that the parts that know each fact set it themselves,
//! without importing anything above them: the broker supervisor (connected, consuming, its
//! heartbeat), the database gate (open or closed), the workers (a worker loop that ended) and the
//! daemon (draining after a shutdown signal). The gauges are the state: nothing is copied.
//!
//! **Ready** (`/readyz` 200): connected to the broker, consuming both lanes, the database gate open,
//! and not draining. Anything else is 503, with the first reason that applies.
//!
//! **Alive** (`/livez` 200): the daemon runs its loops. Three things prove it:
//! - the answer itself: the listener runs on the daemon's single runtime thread, beside every loop
//!   (supervisor, lane pumps, workers, committers, ack tasks, relay); a loop that blocks the thread
//!   or never yields stops the answers, and the probe times out;
//! - no worker loop ended before shutdown (a panic outside a job's own guard would end one, and the
//!   daemon would quietly lose capacity);
//! - the broker supervisor turned within its stall limit. It beats every second while it pumps, and
//!   while it waits for the database gate or before a reconnect; its longest silent stretch is a
//!   broker operation per node plus a few for the session, each bounded by `amqp.operation_timeout`
//!   (see [`Health::supervising`]). Before the supervisor starts (protocols, migrations) and after
//!   it returns (draining), only the first two apply.
//!
//! A broker or database outage never makes the daemon not alive: it rides them out itself, and a
//! restart would not help. It makes it not ready.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What the probes and the health gauges read.
#[derive(Debug)]
pub struct Health {
    epoch: Instant,
    /// `edc_broker_connected`: a session is open (it may be paused by the gate).
    broker_connected: Gauge,
    /// Both consumers are started and not paused.
    consuming: AtomicBool,
    /// A shutdown signal arrived.
    draining: AtomicBool,
    /// `edc_db_gate_open`.
    gate_open: Gauge,
    /// Since when the gate is closed, as counted into `gate_closed_seconds` so far.
    gate_closed_since: Mutex<Option<Instant>>,
    /// `edc_db_gate_closed_seconds_total`.
    gate_closed_seconds: Counter<f64, AtomicU64>,
    /// `edc_ready`, brought up to date whenever readiness is asked (each scrape).
    ready: Gauge,
    /// Milliseconds from `epoch` to the supervisor's last beat, plus one; 0 while no supervisor runs.
    last_beat: AtomicU64,
    /// The longest the supervisor may stay silent, in milliseconds.
    stall_limit: AtomicU64,
    /// Worker loops that ended before shutdown.
    workers_lost: AtomicUsize,
}

impl Default for Health {
    fn default() -> Self {
        let gate_open = Gauge::default();
        gate_open.set(1);
        Health {
            epoch: Instant::now(),
            broker_connected: Gauge::default(),
            consuming: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            gate_open,
            gate_closed_since: Mutex::new(None),
            gate_closed_seconds: Counter::default(),
            ready: Gauge::default(),
            last_beat: AtomicU64::new(0),
            stall_limit: AtomicU64::new(0),
            workers_lost: AtomicUsize::new(0),
        }
    }
}

impl Health {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "edc_ready",
            "1 while /readyz answers 200: connected to the broker, consuming, the database gate open, not draining",
            self.ready.clone(),
        );
        registry.register(
            "edc_broker_connected",
            "1 while a broker session is open",
            self.broker_connected.clone(),
        );
        registry.register(
            "edc_db_gate_open",
            "1 while the database gate is open, 0 while consumption is paused for a database outage",
            self.gate_open.clone(),
        );
        registry.register(
            "edc_db_gate_closed_seconds",
            "Time the database gate spent closed",
            self.gate_closed_seconds.clone(),
        );
    }

    /// A broker session opened (consuming) or was lost.
    pub fn broker_connected(&self, connected: bool) {
        self.broker_connected.set(i64::from(connected));
        if !connected {
            self.consuming(false);
        }
    }

    /// Both consumers run (true), or are cancelled: paused by the gate, lost, or stopped.
    pub fn consuming(&self, consuming: bool) {
        self.consuming.store(consuming, Relaxed);
    }

    /// A shutdown signal arrived: not ready from now on.
    pub fn draining(&self) {
        self.draining.store(true, Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// The database gate opened or closed; counts the time it stays closed.
    pub fn gate(&self, open: bool) {
        let mut since = self.gate_closed_since.lock().expect("gate clock");
        match (open, *since) {
            (false, None) => *since = Some(Instant::now()),
            (true, Some(from)) => {
                self.gate_closed_seconds
                    .inc_by(from.elapsed().as_secs_f64());
                *since = None;
            }
            _ => {}
        }
        self.gate_open.set(i64::from(open));
    }

    /// Counts the time the gate has been closed so far (scrapes call this, so the counter moves
    /// during a long outage, not only when it ends).
    fn settle_gate_clock(&self) {
        let mut since = self.gate_closed_since.lock().expect("gate clock");
        if let Some(from) = *since {
            let now = Instant::now();
            self.gate_closed_seconds
                .inc_by(now.duration_since(from).as_secs_f64());
            *since = Some(now);
        }
    }

    /// The supervisor starts; it must beat at least every `stall_limit` from now on.
    pub fn supervising(&self, stall_limit: Duration) {
        self.stall_limit
            .store(stall_limit.as_millis() as u64, Relaxed);
        self.beat();
    }

    /// The supervisor turned.
    pub fn beat(&self) {
        let at = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_beat.store(at, Relaxed);
    }

    /// The supervisor returned (shutdown): its silence proves nothing any more.
    pub fn supervisor_done(&self) {
        self.last_beat.store(0, Relaxed);
        self.consuming(false);
    }

    /// A worker loop ended while the daemon was not shutting down.
    pub fn worker_lost(&self) {
        self.workers_lost.fetch_add(1, Relaxed);
    }

    /// Ok while ready; otherwise the first reason it is not. Keeps `edc_ready` up to date.
    pub fn readiness(&self) -> Result<(), &'static str> {
        let verdict = if self.is_draining() {
            Err("draining after a shutdown signal")
        } else if self.broker_connected.get() == 0 {
            Err("not connected to the broker")
        } else if self.gate_open.get() == 0 {
            Err("the database gate is closed")
        } else if !self.consuming.load(Relaxed) {
            Err("not consuming")
        } else {
            Ok(())
        };
        self.ready.set(i64::from(verdict.is_ok()));
        verdict
    }

    /// Ok while the daemon's loops run; otherwise why not.
    pub fn liveness(&self) -> Result<(), String> {
        let lost = self.workers_lost.load(Relaxed);
        if lost > 0 {
            return Err(format!("{lost} worker loop(s) ended before shutdown"));
        }
        let last = self.last_beat.load(Relaxed);
        if last > 0 {
            let now = self.epoch.elapsed().as_millis() as u64 + 1;
            let silent = Duration::from_millis(now.saturating_sub(last));
            let limit = Duration::from_millis(self.stall_limit.load(Relaxed));
            if silent > limit {
                return Err(format!(
                    "the broker supervisor has not turned for {}s (limit {}s)",
                    silent.as_secs(),
                    limit.as_secs()
                ));
            }
        }
        Ok(())
    }

    /// Brings the scrape-time values up to date: the gate's closed time and `edc_ready`.
    pub(crate) fn refresh(&self) {
        self.settle_gate_clock();
        let _ = self.readiness();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_connected_consuming_with_the_gate_open_and_not_draining() {
        let h = Health::default();
        assert_eq!(h.readiness(), Err("not connected to the broker"));
        h.broker_connected(true);
        assert_eq!(h.readiness(), Err("not consuming"));
        h.consuming(true);
        assert_eq!(h.readiness(), Ok(()));
        assert_eq!(h.ready.get(), 1);
        h.gate(false);
        assert_eq!(h.readiness(), Err("the database gate is closed"));
        h.gate(true);
        assert_eq!(h.readiness(), Ok(()));
        h.broker_connected(false);
        assert_eq!(h.readiness(), Err("not connected to the broker"));
        h.broker_connected(true);
        h.consuming(true);
        h.draining();
        assert_eq!(h.readiness(), Err("draining after a shutdown signal"));
        assert_eq!(h.ready.get(), 0);
    }

    #[test]
    fn the_gate_clock_counts_closed_time_during_and_after_an_outage() {
        let h = Health::default();
        h.gate(false);
        std::thread::sleep(Duration::from_millis(20));
        h.refresh();
        let during = h.gate_closed_seconds.get();
        assert!(during >= 0.02, "{during}");
        h.gate(false); // closing a closed gate changes nothing
        std::thread::sleep(Duration::from_millis(20));
        h.gate(true);
        let after = h.gate_closed_seconds.get();
        assert!(after >= during + 0.02, "{after}");
        h.refresh();
        assert_eq!(h.gate_closed_seconds.get(), after, "open: the clock stands");
        assert_eq!(h.gate_open.get(), 1);
    }

    #[test]
    fn a_silent_supervisor_or_a_lost_worker_is_not_alive() {
        let h = Health::default();
        assert!(h.liveness().is_ok(), "no supervisor yet: start-up");
        h.supervising(Duration::from_millis(30));
        assert!(h.liveness().is_ok());
        std::thread::sleep(Duration::from_millis(50));
        let e = h.liveness().unwrap_err();
        assert!(e.contains("supervisor"), "{e}");
        h.beat();
        assert!(h.liveness().is_ok());
        std::thread::sleep(Duration::from_millis(50));
        h.supervisor_done();
        assert!(
            h.liveness().is_ok(),
            "after shutdown its silence is expected"
        );
        h.worker_lost();
        assert!(h.liveness().unwrap_err().contains("worker"));
    }
}
