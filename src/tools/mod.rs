//! The command-line tools behind the CLI: `generate` makes synthetic DEMO-001 records, `publish`
//! sends NDJSON lines to the work queue with publisher confirms, `batch status` prints an upload
//! batch's receipt, `dlq` inspects, replays and purges dead letters, `status` tells whether the
//! daemon keeps up, `healthcheck` asks a running daemon's `/livez`, `prune` applies the retention,
//! `study from-odm` converts a CDISC ODM file's metadata into a study protocol, `odm import`
//! publishes an ODM file's form instances, one message each.
//!
//! What they print goes to the writer they are given, a line at a time and flushed, so that what was
//! printed stays printed when a command fails part-way. Progress goes to stderr, and only when it is
//! a terminal ([`progress`]). Every value an uploader chose (a message id, a header, a reply address,
//! a routing key, a field of a body) is printed through [`crate::printable`].

pub mod batch;
pub mod dlq;
pub mod generate;
pub mod generate_odm;
pub mod healthcheck;
pub mod odm_import;
pub mod progress;
pub mod prune;
pub mod publish;
pub mod status;
pub mod study_odm;

/// How a tool prints its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// For a person: the text described in the README.
    #[default]
    Text,
    /// For a program: JSON with the field names described in the README.
    Json,
}

/// Writes one line and flushes it, so that it is out before the next step can fail.
pub(crate) fn emit(out: &mut dyn std::io::Write, line: &str) -> std::io::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()
}
