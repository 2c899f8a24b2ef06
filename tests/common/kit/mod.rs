//! The test kit shared by the integration tests, the chaos suite and the benchmark (each includes
//! this folder with `#[path = ".../common/kit/mod.rs"] mod kit;`):
//!
//! - [`world`]: a private world (its own migrated database and uniquely named queues and
//!   exchanges), the variables that point the daemon at it, and its removal.
//! - [`endpoints`]: where the local servers are (`tests/common/endpoints.rs`).
//! - [`process`]: the daemon binary as a child process. [`launch::Launch`] (re-exported as
//!   `process::Launch`) says how to start it (the binary's path, its arguments and variables,
//!   where its output goes);
//!   [`process::DaemonProcess`] sends it signals, waits (bounded) for it to be ready or to exit,
//!   returns its exit status and output, and kills it when dropped, so that a failing test never
//!   leaves a daemon running.
//! - [`wait`]: the one bounded wait. Every wait has a deadline and fails with what it waited for.
//! - [`http`]: a GET on the daemon's HTTP listener.
//! - [`broker`]: the queues a test's or a measurement's world made, found and deleted.
//! - [`raw_amqp`]: a raw AMQP publisher, for content headers no client library would send.
//!
//! Each user takes a different part of it, so unused items are not warned about.

#![allow(dead_code)]

pub mod broker;
#[path = "../endpoints.rs"]
pub mod endpoints;
pub mod http;
pub mod launch;
pub mod process;
pub mod raw_amqp;
pub mod wait;
pub mod world;
