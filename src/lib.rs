//! edc-ingest moves clinical-trial case report forms (CRFs) from RabbitMQ into PostgreSQL:
//! validated against the study protocol, stripped of direct patient identifiers, stored exactly once,
//! and acknowledged only after the commit. What cannot be stored goes to a dead-letter queue with a
//! reason written by us.
//!
//! # One message, from the socket to the ack
//! ```text
//! RabbitMQ ──(prefetch = workers x batch_size)──> broker::consume   the supervisor: connect, declare,
//!                                                                   consume two lanes, reconnect
//!   broker::inbound   each delivery read once into an Inbound; slots hand it to a worker
//!   worker::job       a group of deliveries: crash check for redeliveries, then for each
//!   pipeline          parse -> validate -> de-identify                      pure, no I/O
//!   store::committer  the records ready across workers: ONE statement, ONE transaction
//!   worker::fate      stored | duplicate | conflict | refused | outage | retry  -> a Fate
//!   broker::settle    ack after COMMIT | dead letter (confirmed), ack | delay queue, ack | give back
//!   broker::acks      one task per channel: acks in delivery order, coalesced into `multiple` acks
//! relay               the events written with the records (outbox) -> the events exchange
//! ```
//!
//! # Layout, bottom up
//! Each module uses only those above it in this list.
//! - [`lane`], [`printable`], [`failure`]: vocabulary (the two lanes, values safe to print, how a
//!   command fails and its exit code).
//! - [`config`]: typed settings, layered defaults -> file -> `EDC__*` environment; secrets redacted.
//! - [`health`], [`stats`], [`telemetry`], [`shutdown`]: readiness and liveness; the metrics
//!   (counters, gauges, histograms: one source for `/metrics`, the summary line and the tests);
//!   logging; signals.
//! - [`protocol`]: the study protocols (items, edit checks and alerts in CEL).
//! - [`pipeline`]: the pure stages a body goes through.
//! - [`store`]: PostgreSQL: pool and migrations, the ingest call, group commit, error classes, the
//!   crash count, the database gate.
//! - [`broker`]: RabbitMQ: connection, topology, publishing with confirms, the supervisor and its
//!   lane pumps, the hand-over to the workers, settlement and acks.
//! - [`worker`]: the fixed worker set and what one job does.
//! - [`relay`]: the outbox relay (events and result callbacks).
//! - [`http`]: the HTTP listener: `/metrics`, `/livez`, `/readyz`.
//! - [`daemon`]: wiring; [`daemon::run`] runs the daemon until its shutdown token is cancelled.
//! - [`tools`]: the command-line tools: `generate`, `publish`, `batch status`, `dlq`, `healthcheck`.

pub mod broker;
pub mod config;
pub mod daemon;
pub mod failure;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod health;
pub mod http;
pub mod lane;
pub mod pipeline;
pub mod printable;
pub mod protocol;
pub mod relay;
pub mod shutdown;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod tools;
pub mod worker;
