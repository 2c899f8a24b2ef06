//! `edc-ingest status`: an operator's one-screen answer to "is it keeping up?". This file holds
//! the options, the report and the command that fills it; `queues`, `database` and `scrape` each
//! read one source, `render` draws the one screen.
//!
//! Three sources, asked at once, each on its own:
//! - **the broker**: the ready messages and consumers of the work queue, the fast lane, their delay
//!   queues and the dead-letter queue, by a *passive* declare (nothing is created, no management API
//!   is needed), read at the start and again after the window, so the backlog's trend is known;
//! - **the database**: the dead letters the daemons recorded (`rejections`) in the last hour and day,
//!   by kind, and the upload batches still open (an expected size, no `completed_at`) with their
//!   progress, oldest first;
//! - **the running replicas**: their `/metrics`, scraped at the start and after the window; the rates
//!   are the counters' increase over that time. The daemon keeps no history of its own (Prometheus
//!   does), so the rates are those of the window (`--window 1m` for the last minute).
//!
//! A replica that does not answer is reported as such, never an error. A broker or database that
//! does not answer is reported too, with the rest still shown; [`Report::complete`] then says no and
//! the command exits 1.

mod database;
mod queues;
mod render;
mod scrape;

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::config::Settings;

use super::healthcheck;

pub use database::{DatabasePart, KindCount, OpenBatch, OpenBatches};
pub use queues::{Backlog, BrokerPart, QueueDepth};
pub use scrape::{Rates, Replica, metrics_url};

/// What to ask besides the settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `/metrics` addresses of the replicas (`http://HOST:PORT[/PATH]` or `HOST:PORT`); empty:
    /// the local one of `http.listen`, if it is on.
    pub metrics: Vec<String>,
    /// Time between the two readings of the queues and the metrics; zero: one reading, no rates.
    pub window: Duration,
}

/// Everything `status` found. Serialised as is for `--output json` (the README lists the fields).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// When the first readings were taken (RFC 3339).
    pub checked_at: String,
    pub window_seconds: f64,
    pub broker: BrokerPart,
    pub backlog: Backlog,
    pub database: DatabasePart,
    pub replicas: Vec<Replica>,
    /// The rates of every replica that gave them, added up; none if none did.
    pub total_rates_per_second: Option<Rates>,
}

impl Report {
    /// Whether the broker and the database both answered (the replicas do not count).
    pub fn complete(&self) -> bool {
        self.broker.answered && self.database.answered
    }

    /// What did not answer, for the error line.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.broker.answered {
            out.push("the broker");
        }
        if !self.database.answered {
            out.push("the database");
        }
        out
    }
}

/// Asks the broker, the database and the replicas, all at once.
pub async fn status(settings: &Settings, opts: &Options) -> Report {
    let checked_at = Utc::now();
    let start = tokio::time::Instant::now();
    let urls = if opts.metrics.is_empty() {
        healthcheck::listen_base(&settings.http.listen)
            .map(|b| vec![format!("{b}/metrics")])
            .unwrap_or_default()
    } else {
        opts.metrics.iter().map(|u| metrics_url(u)).collect()
    };
    let (broker, database, replicas) = tokio::join!(
        queues::broker_part(settings, start, opts.window),
        database::database_part(settings),
        scrape::replicas_part(&urls, opts.window),
    );
    let backlog = queues::backlog(&broker, opts.window);
    let mut total: Option<Rates> = None;
    for r in replicas.iter().filter_map(|r| r.rates_per_second.as_ref()) {
        total.get_or_insert_with(Rates::default).add(r);
    }
    Report {
        checked_at: checked_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        window_seconds: opts.window.as_secs_f64(),
        broker,
        backlog,
        database,
        replicas,
        total_rates_per_second: total,
    }
}
