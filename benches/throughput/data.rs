//! The records every stage works on: generated DEMO-001 records (`tools::generate`), each also run
//! through the daemon's own pure pipeline (`pipeline::prepare`) so that the database ceiling writes
//! the rows the daemon would write, and publishing helpers built on `tools::publish`.

use std::io::{BufRead, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use edc_ingest::config::Settings;
use edc_ingest::pipeline::{self, Deidentified, Pseudonymizer, Rejected};
use edc_ingest::protocol::Registry;
use edc_ingest::tools::generate::{self, Options};
use serde::Serialize;
use uuid::Uuid;

use crate::world::{World, studies_dir};

pub const SEED: u64 = 20_261_120;
pub const INVALID_RATIO: f64 = 0.01;
pub const QUERIED_RATIO: f64 = 0.05;

/// One generated message, and what the daemon's pipeline makes of it.
pub struct Message {
    pub body: String,
    pub sha256: String,
    /// The AMQP message id the database ceiling pretends it had.
    pub message_id: String,
    pub outcome: Result<Deidentified, Rejected>,
}

pub type Dataset = Arc<Vec<Message>>;

pub fn generate(count: usize) -> Result<Dataset> {
    let opts = Options {
        count,
        seed: SEED,
        invalid_ratio: INVALID_RATIO,
        queried_ratio: QUERIED_RATIO,
        duplicate_ratio: 0.0,
        batch_size: 1000,
    };
    let mut out = Vec::with_capacity(count * 1100);
    generate::generate(&opts, &mut out)?;
    let registry =
        Registry::load(&studies_dir()).map_err(|e| anyhow::anyhow!("study protocols: {e}"))?;
    let pseudonymizer = Pseudonymizer::insecure_dev();
    let defaults = [(
        "EDC__DEV_INSECURE_PSEUDONYM_KEY".to_string(),
        "true".to_string(),
    )];
    let max_bytes = Settings::load_with_env(None, defaults)?.max_message_bytes;
    let text = String::from_utf8(out)?;
    let messages = text
        .lines()
        .map(|line| Message {
            sha256: pipeline::sha256_hex(line.as_bytes()),
            message_id: Uuid::new_v4().to_string(),
            outcome: pipeline::prepare(line.as_bytes(), max_bytes, &registry, &pseudonymizer),
            body: line.to_string(),
        })
        .collect();
    Ok(Arc::new(messages))
}

/// What the dataset holds, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct Mix {
    pub messages: usize,
    pub accepted: usize,
    pub queried: usize,
    pub rejected: usize,
    pub mean_body_bytes: usize,
}

pub fn mix(data: &[Message]) -> Mix {
    let queried = data
        .iter()
        .filter(|m| matches!(&m.outcome, Ok(r) if !r.findings.is_empty()))
        .count();
    let rejected = data.iter().filter(|m| m.outcome.is_err()).count();
    Mix {
        messages: data.len(),
        accepted: data.len() - queried - rejected,
        queried,
        rejected,
        mean_body_bytes: data.iter().map(|m| m.body.len()).sum::<usize>() / data.len().max(1),
    }
}

/// The body with its `record_id` replaced, so a record can be sent again as a new one. `None` when
/// the body has no UUID record id (some of the invalid records).
pub fn with_record_id(body: &str, id: Uuid) -> Option<String> {
    const KEY: &str = "\"record_id\":\"";
    let start = body.find(KEY)? + KEY.len();
    let old = body.get(start..start + 36)?;
    Uuid::parse_str(old).ok()?;
    let mut out = String::with_capacity(body.len());
    out.push_str(&body[..start]);
    out.push_str(&id.hyphenated().to_string());
    out.push_str(&body[start + 36..]);
    Some(out)
}

/// `count` NDJSON lines drawn from `data` in order (wrapping around), read lazily: with
/// `fresh_ids`, every record gets a new record id, so a million lines need no million-line buffer.
pub struct Feed<'a> {
    data: &'a [Message],
    count: usize,
    next: usize,
    fresh_ids: bool,
    line: Vec<u8>,
    pos: usize,
}

impl<'a> Feed<'a> {
    pub fn new(data: &'a [Message], count: usize, fresh_ids: bool) -> Self {
        Feed {
            data,
            count,
            next: 0,
            fresh_ids,
            line: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Feed<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos == self.line.len() && self.next < self.count && !self.data.is_empty() {
            let body = &self.data[self.next % self.data.len()].body;
            let fresh = self
                .fresh_ids
                .then(|| with_record_id(body, Uuid::new_v4()))
                .flatten();
            self.line.clear();
            self.line
                .extend_from_slice(fresh.as_deref().unwrap_or(body).as_bytes());
            self.line.push(b'\n');
            self.pos = 0;
            self.next += 1;
        }
        Ok(&self.line[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.line.len());
    }
}

/// How a preload went.
#[derive(Clone, Debug, Serialize)]
pub struct Publish {
    pub messages: u64,
    pub seconds: f64,
    pub rate: f64,
}

/// Publishes `count` records into the world's work queue with `tools::publish` (persistent,
/// publisher confirms), and returns once the broker confirmed every one.
pub async fn preload(
    world: &World,
    data: &[Message],
    count: usize,
    fresh_ids: bool,
) -> Result<Publish> {
    let s = world.settings();
    let started = Instant::now();
    // Bounded: at least 1,000 messages a second.
    let limit = Duration::from_secs(120 + count as u64 / 1000);
    let sent = tokio::time::timeout(
        limit,
        edc_ingest::tools::publish::publish(&s.amqp, &s.retry, Feed::new(data, count, fresh_ids)),
    )
    .await
    .with_context(|| format!("publishing {count} messages took over {limit:?}"))??;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(sent == count as u64, "published {sent} of {count} messages");
    Ok(Publish {
        messages: sent,
        seconds,
        rate: sent as f64 / seconds,
    })
}
