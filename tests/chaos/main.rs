//! The chaos suite: a flood of generated records through the real daemon binary and the real servers,
//! one injected fault per scenario, then an audit of the database and the broker.
//!
//! These tests stop and start the shared local RabbitMQ and PostgreSQL (through
//! `scripts/services.sh`), so they run one at a time, after the other tests: `scripts/test.sh` runs
//! them as `cargo test --all-features --test chaos -- --test-threads=1`.
//!
//! After every scenario, from the database and the broker:
//! - every valid record is stored exactly once (one `crf_records` row and one `created` audit row);
//! - every invalid one is dead-lettered with the right kind (one `rejections` row each), and the
//!   dead-letter queue holds each of them (a repeat only where a fault struck between its publish and
//!   the ack);
//! - no data query is duplicated, and none of the fault's making is dead-lettered;
//! - the work and delay queues end empty, and the daemon consumes again after the fault.
//!
//! Each scenario prints a line of the results table.

#![forbid(unsafe_code)]

mod fast_lane;
#[path = "../it/helpers.rs"]
mod helpers;
mod procs;
mod scenarios;
mod support;
