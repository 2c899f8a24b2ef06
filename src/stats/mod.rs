//! What the daemon counts, in one place: the metrics served on `/metrics`, the shutdown summary and
//! what the tests read are the same atomics. [`Stats`] holds the `prometheus-client` handles (a
//! counter is an atomic inside); [`Summary`] is read from them.
//!
//! Labels are `&'static str` from fixed lists (outcomes, dead-letter kinds, statuses, lanes, states):
//! a record id, a subject, a site or anything else a message carries cannot become a label, by type.
//!
//! A few counters are the summary's only (`groups`, `grouped_records`, `group_splits`, `acks`): they
//! are plain atomics and not served.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::health::Health;
use crate::lane::Lane;
use crate::pipeline::RejectKind;
use crate::pipeline::deidentify::Status;

mod summary;
pub use summary::Summary;

/// One label, both parts fixed at compile time.
type Label = [(&'static str, &'static str); 1];

/// The `Content-Type` of [`Stats::encode`]'s output (the Prometheus text format, 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

pub struct Stats {
    registry: Registry,
    /// `edc_messages_total{outcome=...}`, the dead-lettered one aside.
    pub accepted: Counter,
    pub queried: Counter,
    pub duplicate: Counter,
    /// Given back to the queue unstarted (shutdown, a database pause).
    pub requeued: Counter,
    /// Sent round a short delay queue: the database was unavailable or the job ran out of time.
    pub postponed: Counter,
    /// Parked in a delay queue for a later attempt.
    pub retried: Counter,
    /// `edc_messages_total{outcome="dead_lettered"}`: the sum of `dead_lettered`, kept with it.
    dead_lettered_outcome: Counter,
    /// `edc_dead_letters_total{kind=...}`, indexed by `RejectKind as usize`.
    dead_lettered: [Counter; RejectKind::ALL.len()],
    /// `edc_records_stored_total{status=...}`: records written, counted at the commit.
    stored: [Counter; 2],
    /// `edc_job_duration_seconds`: one job (a group of deliveries), from taking it to its outcome.
    pub job_duration: Histogram,
    /// `edc_publish_to_commit_seconds`.
    publish_to_commit: Histogram,
    /// `edc_commit_group_size`: records per transaction.
    pub commit_group_size: Histogram,
    /// `edc_deliveries_in_flight{lane=...}`, indexed by `Lane as usize`.
    in_flight: [Gauge; 2],
    /// `edc_workers_busy` (see [`Stats::worker_busy`]).
    workers_busy: Gauge,
    /// `edc_workers`: configured.
    pub workers: Gauge,
    /// `edc_pool_*`, set from the pool's status at each scrape.
    pub pool: PoolGauges,
    /// `edc_broker_reconnects_total`: attempts to open a session after the first.
    pub broker_reconnects: Counter,
    /// `edc_broker_sessions_total`: sessions opened, the first included.
    pub broker_sessions: Counter,
    /// `edc_outbox_backlog`, `edc_relay_lag_seconds`, `edc_batches_open`: read from the database
    /// every few seconds (see `store::backlog`).
    pub outbox_backlog: Gauge,
    pub relay_lag: Gauge<f64, AtomicU64>,
    pub batches_open: Gauge,
    /// `edc_events_published_total{kind=event|callback}`.
    events_published: [Counter; 2],
    /// `edc_events_parked_total`, `edc_reply_to_refused_total`.
    pub events_parked: Counter,
    pub reply_to_refused: Counter,
    /// Readiness and liveness; its gauges are served too.
    pub health: Health,
    /// Transactions that stored several records at once (group commit).
    pub groups: AtomicU64,
    /// Records stored by those transactions.
    pub grouped_records: AtomicU64,
    /// Groups split in two after their statement failed, to isolate a bad record.
    pub group_splits: AtomicU64,
    /// Ack frames sent; one `multiple` ack settles many deliveries.
    pub acks: AtomicU64,
    /// Run before each scrape: values read where they live (the pool's status).
    before_scrape: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

/// The pool's connections, as deadpool's `Pool::status()` tells them.
#[derive(Clone, Debug, Default)]
pub struct PoolGauges {
    pub in_use: Gauge,
    pub idle: Gauge,
    pub waiting: Gauge,
    pub size: Gauge,
}

/// Where an event from the outbox went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// To the events exchange.
    Event = 0,
    /// To a `reply_to` queue.
    Callback = 1,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stats({})", self.summary())
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        let mut registry = Registry::default();
        let r = &mut registry;

        let messages = Family::<Label, Counter>::default();
        let outcome = |name: &'static str| messages.get_or_create_owned(&[("outcome", name)]);
        let (accepted, queried, duplicate) = (
            outcome("accepted"),
            outcome("queried"),
            outcome("duplicate"),
        );
        let dead_lettered_outcome = outcome("dead_lettered");
        let (postponed, retried, requeued) = (
            outcome("postponed"),
            outcome("retried"),
            outcome("requeued"),
        );
        r.register(
            "edc_messages",
            "Messages by outcome: accepted, queried, duplicate, dead_lettered, postponed, retried, requeued",
            messages,
        );

        let kinds = Family::<Label, Counter>::default();
        let dead_lettered =
            RejectKind::ALL.map(|k| kinds.get_or_create_owned(&[("kind", k.as_str())]));
        r.register("edc_dead_letters", "Messages dead-lettered, by kind", kinds);

        let statuses = Family::<Label, Counter>::default();
        let stored = [Status::Accepted, Status::Queried]
            .map(|s| statuses.get_or_create_owned(&[("status", s.as_str())]));
        r.register(
            "edc_records_stored",
            "Records written to the database, by status, counted when their transaction commits",
            statuses,
        );

        let job_duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        r.register(
            "edc_job_duration_seconds",
            "One job (a delivery, or a group of them with batch_size above 1), from a worker taking it to its outcome",
            job_duration.clone(),
        );
        let publish_to_commit = Histogram::new(exponential_buckets(0.005, 2.0, 18));
        r.register(
            "edc_publish_to_commit_seconds",
            "From a message's publication (its timestamp_in_ms header, else its AMQP timestamp in whole seconds) to the commit of its record",
            publish_to_commit.clone(),
        );
        let commit_group_size = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        r.register(
            "edc_commit_group_size",
            "Records stored per transaction (group commit)",
            commit_group_size.clone(),
        );

        let lanes = Family::<Label, Gauge>::default();
        let in_flight = Lane::ALL.map(|l| lanes.get_or_create_owned(&[("lane", l.as_str())]));
        r.register(
            "edc_deliveries_in_flight",
            "Deliveries taken from the broker and not yet settled, by lane",
            lanes,
        );
        let workers_busy = Gauge::default();
        r.register(
            "edc_workers_busy",
            "Workers running a job",
            workers_busy.clone(),
        );
        let workers = Gauge::default();
        r.register("edc_workers", "Workers configured", workers.clone());

        let states = Family::<Label, Gauge>::default();
        let pool = PoolGauges {
            in_use: states.get_or_create_owned(&[("state", "in_use")]),
            idle: states.get_or_create_owned(&[("state", "idle")]),
            waiting: Gauge::default(),
            size: Gauge::default(),
        };
        r.register(
            "edc_pool_connections",
            "Database pool connections open, by state",
            states,
        );
        r.register(
            "edc_pool_waiting",
            "Tasks waiting for a database pool connection",
            pool.waiting.clone(),
        );
        r.register(
            "edc_pool_size",
            "The most connections the database pool opens (pool_connections: the committers, postgres.worker_connections, the gate and the backlog gauge; at most postgres.pool_size)",
            pool.size.clone(),
        );

        let broker_reconnects = Counter::default();
        r.register(
            "edc_broker_reconnects",
            "Attempts to open a broker session after the first, failed ones included",
            broker_reconnects.clone(),
        );
        let broker_sessions = Counter::default();
        r.register(
            "edc_broker_sessions",
            "Broker sessions opened (connected, declared, consuming), the first included",
            broker_sessions.clone(),
        );

        let outbox_backlog = Gauge::default();
        r.register(
            "edc_outbox_backlog",
            "Outbox rows (events and callbacks) committed and not yet published; read every 5 s",
            outbox_backlog.clone(),
        );
        let relay_lag = Gauge::<f64, AtomicU64>::default();
        r.register(
            "edc_relay_lag_seconds",
            "Age of the oldest unpublished outbox row, 0 if none; read every 5 s",
            relay_lag.clone(),
        );
        let event_kinds = Family::<Label, Counter>::default();
        let events_published = [
            event_kinds.get_or_create_owned(&[("kind", "event")]),
            event_kinds.get_or_create_owned(&[("kind", "callback")]),
        ];
        r.register(
            "edc_events_published",
            "Outbox rows published with a confirm, by kind: event (events exchange) or callback (reply_to)",
            event_kinds,
        );
        let events_parked = Counter::default();
        r.register(
            "edc_events_parked",
            "Outbox rows the broker refused, parked",
            events_parked.clone(),
        );
        let batches_open = Gauge::default();
        r.register(
            "edc_batches_open",
            "Upload batches with an expected size and no completed_at; read every 5 s",
            batches_open.clone(),
        );
        let reply_to_refused = Counter::default();
        r.register(
            "edc_reply_to_refused",
            "reply_to values refused",
            reply_to_refused.clone(),
        );

        let health = Health::default();
        health.register(r);
        r.register(
            "edc_build",
            "The running version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );

        Stats {
            registry,
            accepted,
            queried,
            duplicate,
            requeued,
            postponed,
            retried,
            dead_lettered_outcome,
            dead_lettered,
            stored,
            job_duration,
            publish_to_commit,
            commit_group_size,
            in_flight,
            workers_busy,
            workers,
            pool,
            broker_reconnects,
            broker_sessions,
            outbox_backlog,
            relay_lag,
            batches_open,
            events_published,
            events_parked,
            reply_to_refused,
            health,
            groups: AtomicU64::new(0),
            grouped_records: AtomicU64::new(0),
            group_splits: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            before_scrape: Mutex::new(Vec::new()),
        }
    }

    /// A transaction that stored `records` records.
    pub fn record_group(&self, records: usize) {
        self.commit_group_size.observe(records as f64);
        if records > 1 {
            self.groups.fetch_add(1, Relaxed);
            self.grouped_records.fetch_add(records as u64, Relaxed);
        }
    }

    pub fn dead_lettered(&self, kind: RejectKind) {
        self.dead_lettered[kind as usize].inc();
        self.dead_lettered_outcome.inc();
    }

    /// A record written with this status (its transaction committed).
    pub fn stored(&self, status: Status) {
        let i = match status {
            Status::Accepted => 0,
            Status::Queried => 1,
        };
        self.stored[i].inc();
    }

    /// A record of a message published at `published` committed now.
    pub fn committed(&self, published: Option<SystemTime>) {
        if let Some(at) = published {
            let latency = SystemTime::now()
                .duration_since(at)
                .unwrap_or(Duration::ZERO);
            self.publish_to_commit.observe(latency.as_secs_f64());
        }
    }

    /// Outbox rows published.
    pub fn events_published(&self, kind: EventKind, n: u64) {
        self.events_published[kind as usize].inc_by(n);
    }

    /// Counts a delivery of `lane` in flight until the guard is dropped.
    pub fn in_flight(&self, lane: Lane) -> Held {
        Held::new(&self.in_flight[lane as usize])
    }

    /// Counts a worker busy until the guard is dropped.
    pub fn worker_busy(&self) -> Held {
        Held::new(&self.workers_busy)
    }

    /// Runs `hook` before each scrape, to read a value where it lives.
    pub fn before_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.before_scrape
            .lock()
            .expect("scrape hooks")
            .push(Box::new(hook));
    }

    /// Every metric, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        for hook in self.before_scrape.lock().expect("scrape hooks").iter() {
            hook();
        }
        self.health.refresh();
        let mut out = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    pub fn summary(&self) -> Summary {
        Summary {
            accepted: self.accepted.get(),
            queried: self.queried.get(),
            duplicate: self.duplicate.get(),
            requeued: self.requeued.get(),
            postponed: self.postponed.get(),
            retried: self.retried.get(),
            groups: self.groups.load(Relaxed),
            grouped_records: self.grouped_records.load(Relaxed),
            group_splits: self.group_splits.load(Relaxed),
            acks: self.acks.load(Relaxed),
            dead_lettered: RejectKind::ALL
                .iter()
                .map(|k| (*k, self.dead_lettered[*k as usize].get()))
                .collect(),
        }
    }
}

/// One counted in a gauge (a delivery in flight, a worker busy) until dropped, however it ends.
#[derive(Debug)]
pub struct Held(Gauge);

impl Held {
    fn new(gauge: &Gauge) -> Held {
        gauge.inc();
        Held(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests;
