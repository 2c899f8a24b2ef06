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
//! Each module uses only those above it in this list (the test `layout` below checks it).
//! - [`lane`], [`printable`]: vocabulary (the two lanes, values an uploader chose made safe to print).
//! - [`config`]: typed settings, layered defaults -> file -> `EDC__*` environment; secrets redacted.
//! - [`tls`]: the one crypto provider, the certificate files, the rustls client configurations.
//! - [`failure`]: how a command fails, and its exit code.
//! - [`telemetry`], [`shutdown`]: logging, signals.
//! - [`protocol`]: the study protocols (items, edit checks and alerts in CEL).
//! - [`odm`]: CDISC ODM XML in: the hardened streaming reader, form instances, their writer.
//! - [`pipeline`]: the pure stages a body goes through.
//! - [`health`]: readiness and liveness, set by the parts that know them.
//! - [`stats`]: the metrics (counters, gauges, histograms): one source for `/metrics`, the summary
//!   line and the tests.
//! - [`store`]: PostgreSQL: pool and migrations, the ingest call, group commit, error classes, the
//!   crash count, the database gate.
//! - [`broker`]: RabbitMQ: connection, topology, publishing with confirms, the supervisor and its
//!   lane pumps, the hand-over to the workers, settlement and acks.
//! - [`worker`]: the fixed worker set and what one job does.
//! - [`relay`]: the outbox relay (events and result callbacks).
//! - [`http`]: the HTTP listener: `/metrics`, `/livez`, `/readyz`.
//! - [`tools`]: the command-line tools: `generate`, `publish`, `batch status`, `dlq`, `status`,
//!   `healthcheck`.
//! - [`daemon`]: wiring; [`daemon::run`] runs the daemon until its shutdown token is cancelled.
//! - `fuzzing`: the fuzz targets' harnesses and oracles (`fuzz/`, docs/testing.md).

#![forbid(unsafe_code)]

pub mod broker;
pub mod config;
pub mod daemon;
pub mod failure;
#[cfg(feature = "fault-injection")]
pub mod fault;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod lane;
pub mod odm;
pub mod pipeline;
pub mod printable;
pub mod protocol;
pub mod relay;
pub mod shutdown;
pub mod stats;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tools;
pub mod worker;

/// The modules in the order of the layout above, bottom first (`fault` is test-only vocabulary).
#[cfg(test)]
#[rustfmt::skip]
const LAYERS: &[&str] = &[
    "fault", "lane", "printable", "config", "tls", "failure", "telemetry", "shutdown", "protocol",
    "odm", "pipeline", "health", "stats", "store", "broker", "worker", "relay", "http", "tools", "daemon", "fuzzing",
];

#[cfg(test)]
mod layout {
    use std::path::Path;

    use super::LAYERS;

    /// Every `crate::<module>` a file names.
    fn uses(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            if let Some(list) = rest.strip_prefix('{') {
                let end = list.find('}').unwrap_or(list.len());
                for item in list[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    out.push(name);
                }
            } else {
                out.push(
                    rest.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect(),
                );
            }
        }
        out
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// No import points up, so no import cycle between the modules: each module of `src/` uses
    /// only modules below it in [`LAYERS`].
    #[test]
    fn every_module_uses_only_those_below_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
        let mut all = Vec::new();
        files(&src, &mut all);
        let mut upward = Vec::new();
        for path in all {
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs");
            if matches!(module, "lib" | "main" | "cli") {
                continue; // the top: they may use anything
            }
            let own = rank(module).unwrap_or_else(|| panic!("{module} is not in LAYERS"));
            let text = std::fs::read_to_string(&path).unwrap();
            // Code only: a comment may name any module.
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for used in uses(&code) {
                match rank(&used) {
                    Some(r) if r > own => {
                        upward.push(format!("{} uses {used}", relative.display()))
                    }
                    Some(_) => {}
                    None => panic!(
                        "{}: crate::{used} is not a module of LAYERS",
                        relative.display()
                    ),
                }
            }
        }
        assert!(upward.is_empty(), "imports that point up: {upward:#?}");
    }

    #[test]
    fn uses_reads_paths_and_lists() {
        assert_eq!(
            uses(
                "use crate::store::{self, X};\nlet a = crate::lane::Lane::Urgent; use crate::{config, stats::S};"
            ),
            vec!["store", "lane", "config", "stats"]
        );
    }
}
