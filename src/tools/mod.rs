//! The uploader's side and other helpers behind the CLI: `generate` makes synthetic DEMO-001
//! records, `publish` sends NDJSON lines to the work queue with publisher confirms, `healthcheck` asks
//! a running daemon's `/livez`.

pub mod batch;
pub mod dlq;
pub mod generate;
pub mod healthcheck;
pub mod publish;
