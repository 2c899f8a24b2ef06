//! edc-ingest moves clinical-trial case report forms (CRFs) from RabbitMQ into PostgreSQL:
//! validated against the study protocol, stripped of direct patient identifiers, stored exactly once,
//! and acknowledged only after the commit. What cannot be stored goes to a dead-letter queue with a
//! reason written by us.
//!
//! # One message, from the socket to the ack
//! ```text
//! RabbitMQ --(prefetch = workers)--> consumer::pump --1-slot channel--> worker (one of N)
//!   worker::process: pipeline::prepare  parse -> validate -> de-identify   (pure)
//!                    pipeline::persist  one statement = one transaction    (idempotent on the key)
//!                    worker::settle     ack after COMMIT | dead letter (confirmed) then ack | requeue
//!   acks: one task per channel sends them in delivery order, coalesced into `multiple` acks
//! ```
//!
//! # Layout
//! - [`config`]: typed settings, layered defaults -> file -> `EDC__*` environment; secrets redacted.
//! - [`protocol`]: study protocol model and loading (items, edit checks in CEL).
//! - [`pipeline`]: the stages a body goes through; [`pipeline::persist`] is the only one with I/O.
//! - [`worker`]: one job, from delivery to settlement; the only code that decides an ack or a nack.
//! - [`acks`]: sends the acks and nacks of a channel in order, coalesced where that is safe.
//! - [`consumer`]: the supervisor (connect, declare, consume, reconnect) and the fixed worker set.
//! - [`amqp`]: connection with fail-over, topology, dead-letter publishing with confirms.
//! - [`db`]: connection pool and embedded migrations.
//! - [`app`]: wiring; [`app::run`] runs the daemon until its shutdown token is cancelled.
//! - [`gate`]: whether the database is usable; consumption pauses while it is not.
//! - [`outbox`]: the relay that publishes events and result callbacks written with the records.
//! - [`shutdown`], [`telemetry`], [`stats`]: signals, logging, counters.
//! - [`tools`]: `generate` and `publish`, the uploader's side.

pub mod acks;
pub mod amqp;
pub mod app;
pub mod config;
pub mod consumer;
pub mod db;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod gate;
pub mod outbox;
pub mod pipeline;
pub mod protocol;
pub mod shutdown;
pub mod stats;
pub mod telemetry;
pub mod tools;
pub mod worker;
