//! `edc-ingest status`: an operator's one-screen answer to "is it keeping up?".
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

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use serde::Serialize;

use crate::broker::{self, topology};
use crate::config::Settings;
use crate::pipeline::RejectKind;
use crate::printable::printable;
use crate::store;

use super::healthcheck;

/// Open batches listed (the oldest); the count covers them all.
const OPEN_BATCHES_LISTED: i64 = 10;

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

#[derive(Clone, Debug, Serialize)]
pub struct BrokerPart {
    pub answered: bool,
    pub error: Option<String>,
    pub queues: Vec<QueueDepth>,
}

#[derive(Clone, Debug, Serialize)]
pub struct QueueDepth {
    /// `work`, `urgent`, `delay` or `dead_letter`.
    pub role: &'static str,
    pub name: String,
    /// False if the queue is not declared (yet): no daemon or tool has run against this broker.
    pub exists: bool,
    /// Messages ready (not counting those delivered and not yet acked), at the end of the window.
    pub ready: Option<u64>,
    pub consumers: Option<u64>,
    /// The change of `ready` over the window, per second.
    pub change_per_second: Option<f64>,
}

/// The work waiting: the work queue, the fast lane and their delay queues together.
#[derive(Clone, Debug, Serialize)]
pub struct Backlog {
    pub ready: Option<u64>,
    pub change_per_second: Option<f64>,
    /// `keeping_up`, `draining`, `falling_behind`, `level`, `not_consumed` or `unknown`.
    pub verdict: &'static str,
    /// At the rate it shrinks, when it is draining.
    pub drained_in_seconds: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DatabasePart {
    pub answered: bool,
    pub error: Option<String>,
    /// Every kind, in the order of the README's table, with zeros.
    pub dead_letters_by_kind: Vec<KindCount>,
    pub open_batches: Option<OpenBatches>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KindCount {
    pub kind: &'static str,
    pub last_hour: i64,
    pub last_day: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpenBatches {
    pub count: i64,
    /// The oldest open batches (by their first outcome), at most 10.
    pub oldest: Vec<OpenBatch>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpenBatch {
    pub batch_id: String,
    pub expected: i32,
    /// Messages of the batch that have their outcome.
    pub outcomes: i64,
    pub first_outcome_at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Replica {
    pub url: String,
    pub answered: bool,
    pub error: Option<String>,
    pub version: Option<String>,
    pub ready: Option<bool>,
    pub broker_connected: Option<bool>,
    pub db_gate_open: Option<bool>,
    pub workers: Option<i64>,
    pub workers_busy: Option<i64>,
    pub deliveries_in_flight: Option<i64>,
    pub outbox_backlog: Option<i64>,
    pub relay_lag_seconds: Option<f64>,
    /// The counters' increase over the time between this replica's two scrapes, per second; none
    /// with no window, or if the replica restarted in between.
    pub rates_per_second: Option<Rates>,
    /// The time between this replica's two scrapes.
    pub rates_over_seconds: Option<f64>,
    /// Mean time from publication to commit of the records committed in the window.
    pub publish_to_commit_mean_seconds: Option<f64>,
    /// Its counters went down between the scrapes: it restarted.
    pub restarted: bool,
}

/// Messages per second, by outcome (`edc_messages_total`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Rates {
    /// Accepted and queried together: records written.
    pub stored: f64,
    pub accepted: f64,
    pub queried: f64,
    pub duplicate: f64,
    pub dead_lettered: f64,
    pub postponed: f64,
    pub retried: f64,
    pub requeued: f64,
}

impl Rates {
    fn add(&mut self, o: &Rates) {
        self.stored += o.stored;
        self.accepted += o.accepted;
        self.queried += o.queried;
        self.duplicate += o.duplicate;
        self.dead_lettered += o.dead_lettered;
        self.postponed += o.postponed;
        self.retried += o.retried;
        self.requeued += o.requeued;
    }
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
        broker_part(settings, start, opts.window),
        database_part(settings),
        replicas_part(&urls, start, opts.window),
    );
    let backlog = backlog(&broker, opts.window);
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

/// `http://HOST:PORT/PATH` as given; `/metrics` when there is no path; `http://` when there is no
/// scheme.
pub fn metrics_url(given: &str) -> String {
    let given = given.trim();
    let with_scheme = if given.contains("://") {
        given.to_string()
    } else {
        format!("http://{given}")
    };
    let after = with_scheme.split_once("://").map_or("", |(_, rest)| rest);
    if after.contains('/') {
        with_scheme
    } else {
        format!("{with_scheme}/metrics")
    }
}

// ----- the broker

/// The queues asked about, in the order shown.
fn queues(settings: &Settings) -> Vec<(&'static str, String)> {
    let a = &settings.amqp;
    let mut out = vec![
        ("work", a.queue.clone()),
        ("urgent", a.urgent_queue.clone()),
    ];
    for lane in [&a.queue, &a.urgent_queue] {
        for q in topology::retry_queues(lane, &settings.retry) {
            out.push(("delay", q));
        }
    }
    out.push(("dead_letter", a.dead_letter_queue.clone()));
    out
}

/// Ready messages and consumers of one queue; None if it does not exist.
type Depth = Option<(u64, u64)>;

async fn broker_part(
    settings: &Settings,
    start: tokio::time::Instant,
    window: Duration,
) -> BrokerPart {
    let names = queues(settings);
    let limit = settings.amqp.operation_timeout;
    let read = async {
        let (conn, _) = broker::connect(&settings.amqp, 0, "edc-ingest status", limit).await?;
        let result = async {
            let began = Instant::now();
            let first = depths(&conn, &names, limit).await?;
            if window.is_zero() {
                return Ok::<_, anyhow::Error>((first.clone(), first, None));
            }
            tokio::time::sleep_until(start + window).await;
            let again = Instant::now();
            let second = depths(&conn, &names, limit).await?;
            Ok((first, second, Some(again - began)))
        }
        .await;
        broker::close(&conn, limit, 200, "done").await;
        result
    };
    match read.await {
        Ok((first, second, elapsed)) => {
            let queues = names
                .into_iter()
                .zip(first.into_iter().zip(second))
                .map(|((role, name), (a, b))| QueueDepth {
                    role,
                    name: printable(&name),
                    exists: b.is_some(),
                    ready: b.map(|(n, _)| n),
                    consumers: b.map(|(_, c)| c),
                    change_per_second: match (a, b, elapsed) {
                        (Some((x, _)), Some((y, _)), Some(t)) => {
                            Some((y as f64 - x as f64) / t.as_secs_f64())
                        }
                        _ => None,
                    },
                })
                .collect();
            BrokerPart {
                answered: true,
                error: None,
                queues,
            }
        }
        Err(e) => BrokerPart {
            answered: false,
            error: Some(format!("{e:#}")),
            queues: Vec::new(),
        },
    }
}

/// One reading of every queue, by passive declares. A queue that does not exist closes the channel
/// it was asked on; the next question gets a new one.
async fn depths(
    conn: &Connection,
    names: &[(&'static str, String)],
    limit: Duration,
) -> anyhow::Result<Vec<Depth>> {
    let mut channel: Option<Channel> = None;
    let mut out = Vec::with_capacity(names.len());
    for (_, name) in names {
        let ch = match &channel {
            Some(c) => c.clone(),
            None => {
                let c = broker::within(limit, "opening a channel", conn.create_channel()).await?;
                channel.insert(c).clone()
            }
        };
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = tokio::time::timeout(
            limit,
            ch.queue_declare(
                ShortString::from(name.as_str()),
                options,
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|_| anyhow::anyhow!("declaring {name}: no answer within {limit:?}"))?;
        match declared {
            Ok(q) => out.push(Some((
                u64::from(q.message_count()),
                u64::from(q.consumer_count()),
            ))),
            Err(e) if not_found(&e) => {
                out.push(None);
                channel = None;
            }
            Err(e) => anyhow::bail!("declaring {}: {e}", printable(name)),
        }
    }
    if let Some(c) = channel {
        let _ = broker::within(limit, "closing a channel", c.close(200, "done".into())).await;
    }
    Ok(out)
}

fn not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p) if p.get_id() == 404)
}

fn backlog(broker: &BrokerPart, window: Duration) -> Backlog {
    let unknown = Backlog {
        ready: None,
        change_per_second: None,
        verdict: "unknown",
        drained_in_seconds: None,
    };
    if !broker.answered {
        return unknown;
    }
    let waiting: Vec<&QueueDepth> = broker
        .queues
        .iter()
        .filter(|q| matches!(q.role, "work" | "urgent" | "delay"))
        .collect();
    let ready: u64 = waiting.iter().filter_map(|q| q.ready).sum();
    let change = (!window.is_zero()).then(|| {
        waiting
            .iter()
            .filter_map(|q| q.change_per_second)
            .sum::<f64>()
    });
    // A quorum queue's count lags a little: less than one message a second is no trend.
    let trend = change.filter(|c| c.abs() >= 0.5);
    let consumed = waiting
        .iter()
        .any(|q| matches!(q.role, "work" | "urgent") && q.consumers.is_some_and(|c| c > 0));
    let verdict = match trend {
        _ if ready == 0 => "keeping_up",
        Some(c) if c < 0.0 => "draining",
        Some(_) => "falling_behind",
        None if !consumed => "not_consumed",
        None => "level",
    };
    Backlog {
        ready: Some(ready),
        change_per_second: change,
        verdict,
        drained_in_seconds: match trend {
            Some(c) if c < 0.0 && ready > 0 => Some(ready as f64 / -c),
            _ => None,
        },
    }
}

// ----- the database

async fn database_part(settings: &Settings) -> DatabasePart {
    let read = async {
        let pg = &settings.postgres;
        let db = store::connect(&pg.url, pg).await?;
        let result = async {
            let by_kind = db
                .query(
                    "SELECT kind,
                            count(*) FILTER (WHERE rejected_at > now() - interval '1 hour'),
                            count(*)
                     FROM rejections WHERE rejected_at > now() - interval '1 day'
                     GROUP BY kind",
                    &[],
                )
                .await?;
            let by_kind: HashMap<String, (i64, i64)> = by_kind
                .iter()
                .map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2))))
                .collect();
            let count: i64 = db
                .query_one(
                    "SELECT count(*) FROM batches WHERE completed_at IS NULL AND expected IS NOT NULL",
                    &[],
                )
                .await?
                .get(0);
            let oldest = db
                .query(
                    "SELECT b.batch_id::text, b.expected,
                            coalesce((SELECT sum(c.accepted + c.queried + c.duplicates + c.dead_lettered_total)
                                      FROM batch_counts c WHERE c.batch_id = b.batch_id), 0)::bigint,
                            b.first_seen
                     FROM batches b WHERE b.completed_at IS NULL AND b.expected IS NOT NULL
                     ORDER BY b.first_seen LIMIT $1",
                    &[&OPEN_BATCHES_LISTED],
                )
                .await?
                .iter()
                .map(|r| OpenBatch {
                    batch_id: r.get(0),
                    expected: r.get(1),
                    outcomes: r.get(2),
                    first_outcome_at: r
                        .get::<_, DateTime<Utc>>(3)
                        .to_rfc3339_opts(SecondsFormat::Secs, true),
                })
                .collect();
            Ok::<_, anyhow::Error>((by_kind, OpenBatches { count, oldest }))
        }
        .await;
        db.close().await;
        result
    };
    match read.await {
        Ok((by_kind, open)) => DatabasePart {
            answered: true,
            error: None,
            dead_letters_by_kind: RejectKind::ALL
                .iter()
                .map(|k| {
                    let (last_hour, last_day) =
                        by_kind.get(k.as_str()).copied().unwrap_or_default();
                    KindCount {
                        kind: k.as_str(),
                        last_hour,
                        last_day,
                    }
                })
                .collect(),
            open_batches: Some(open),
        },
        Err(e) => DatabasePart {
            answered: false,
            error: Some(format!("{e:#}")),
            dead_letters_by_kind: Vec::new(),
            open_batches: None,
        },
    }
}

// ----- the replicas

/// One scrape: every sample by its series (`name{labels}`), and when it was taken.
struct Scrape {
    at: Instant,
    samples: HashMap<String, f64>,
    version: Option<String>,
}

impl Scrape {
    fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    fn outcome(&self, outcome: &str) -> Option<f64> {
        self.get(&format!("edc_messages_total{{outcome=\"{outcome}\"}}"))
    }
}

/// Reads the Prometheus text format: one sample a line, `series value [timestamp]`.
fn parse_metrics(text: &str) -> Result<Scrape, String> {
    let mut samples = HashMap::new();
    let mut version = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, rest) = match line.rfind('}') {
            Some(i) => line.split_at(i + 1),
            None => match line.split_once(' ') {
                Some(parts) => parts,
                None => continue,
            },
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        if let Some(v) = series.strip_prefix("edc_build_info{version=\"") {
            version = v.strip_suffix("\"}").map(printable);
        }
        samples.insert(series.trim().to_string(), value);
    }
    if !samples.contains_key("edc_workers") {
        return Err("answered, but with no edc-ingest metrics".into());
    }
    Ok(Scrape {
        at: Instant::now(),
        samples,
        version,
    })
}

async fn scrape(url: String) -> Result<Scrape, String> {
    let fetched = tokio::task::spawn_blocking(move || {
        // The error names the URL first; the report shows it beside the error already.
        healthcheck::fetch(&url, healthcheck::TIMEOUT).map_err(|e| {
            e.strip_prefix(&format!("{url}: "))
                .map_or(e.clone(), str::to_string)
        })
    })
    .await
    .map_err(|e| e.to_string())??;
    match fetched {
        (200, body) => parse_metrics(&body),
        (status, _) => Err(format!("answered HTTP {status}")),
    }
}

async fn scrape_all(urls: &[String]) -> Vec<Result<Scrape, String>> {
    futures::future::join_all(urls.iter().map(|u| scrape(u.clone()))).await
}

async fn replicas_part(
    urls: &[String],
    start: tokio::time::Instant,
    window: Duration,
) -> Vec<Replica> {
    let first = scrape_all(urls).await;
    let second = if window.is_zero() || urls.is_empty() {
        None
    } else {
        tokio::time::sleep_until(start + window).await;
        Some(scrape_all(urls).await)
    };
    let mut second = second.map(Vec::into_iter);
    urls.iter()
        .zip(first)
        .map(|(url, a)| {
            let b = second.as_mut().and_then(Iterator::next);
            replica(url, a, b)
        })
        .collect()
}

fn replica(
    url: &str,
    first: Result<Scrape, String>,
    second: Option<Result<Scrape, String>>,
) -> Replica {
    let mut r = Replica {
        url: printable(url),
        answered: false,
        error: None,
        version: None,
        ready: None,
        broker_connected: None,
        db_gate_open: None,
        workers: None,
        workers_busy: None,
        deliveries_in_flight: None,
        outbox_backlog: None,
        relay_lag_seconds: None,
        rates_per_second: None,
        rates_over_seconds: None,
        publish_to_commit_mean_seconds: None,
        restarted: false,
    };
    let (first, last) = match (first, second) {
        (Err(e), _) | (Ok(_), Some(Err(e))) => {
            r.error = Some(printable(&e));
            return r;
        }
        (Ok(a), None) => (None, a),
        (Ok(a), Some(Ok(b))) => (Some(a), b),
    };
    let flag = |s: &str| last.get(s).map(|v| v == 1.0);
    let int = |s: &str| last.get(s).map(|v| v as i64);
    r.answered = true;
    r.version = last.version.clone();
    r.ready = flag("edc_ready");
    r.broker_connected = flag("edc_broker_connected");
    r.db_gate_open = flag("edc_db_gate_open");
    r.workers = int("edc_workers");
    r.workers_busy = int("edc_workers_busy");
    r.deliveries_in_flight = match (
        last.get("edc_deliveries_in_flight{lane=\"normal\"}"),
        last.get("edc_deliveries_in_flight{lane=\"urgent\"}"),
    ) {
        (None, None) => None,
        (a, b) => Some((a.unwrap_or(0.0) + b.unwrap_or(0.0)) as i64),
    };
    r.outbox_backlog = int("edc_outbox_backlog");
    r.relay_lag_seconds = last.get("edc_relay_lag_seconds");
    let Some(first) = first else { return r };
    let seconds = last.at.duration_since(first.at).as_secs_f64();
    if seconds <= 0.0 {
        return r;
    }
    let delta =
        |f: &dyn Fn(&Scrape) -> Option<f64>| -> Option<f64> { Some(f(&last)? - f(&first)?) };
    let outcomes = [
        "accepted",
        "queried",
        "duplicate",
        "dead_lettered",
        "postponed",
        "retried",
        "requeued",
    ];
    let deltas: Vec<f64> = outcomes
        .iter()
        .map(|o| delta(&|s: &Scrape| s.outcome(o)).unwrap_or(0.0))
        .collect();
    if deltas.iter().any(|d| *d < 0.0) {
        r.restarted = true;
        return r;
    }
    let per = |d: f64| d / seconds;
    r.rates_per_second = Some(Rates {
        stored: per(deltas[0] + deltas[1]),
        accepted: per(deltas[0]),
        queried: per(deltas[1]),
        duplicate: per(deltas[2]),
        dead_lettered: per(deltas[3]),
        postponed: per(deltas[4]),
        retried: per(deltas[5]),
        requeued: per(deltas[6]),
    });
    r.rates_over_seconds = Some(seconds);
    let sum = delta(&|s: &Scrape| s.get("edc_publish_to_commit_seconds_sum"));
    let count = delta(&|s: &Scrape| s.get("edc_publish_to_commit_seconds_count"));
    if let (Some(sum), Some(count)) = (sum, count)
        && count > 0.0
    {
        r.publish_to_commit_mean_seconds = Some(sum / count);
    }
    r
}

// ----- the text

fn rate(v: f64) -> String {
    format!("{v:.1}/s")
}

fn signed(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:+.1}"))
}

fn rates_text(r: &Rates) -> String {
    format!(
        "stored {} (accepted {}, queried {}), duplicate {}, dead-lettered {}, postponed {}, retried {}, requeued {}",
        rate(r.stored),
        rate(r.accepted),
        rate(r.queried),
        rate(r.duplicate),
        rate(r.dead_lettered),
        rate(r.postponed),
        rate(r.retried),
        rate(r.requeued)
    )
}

fn age(at: &str) -> String {
    let Ok(t) = DateTime::parse_from_rfc3339(at) else {
        return at.to_string();
    };
    let secs = (Utc::now() - t.with_timezone(&Utc)).num_seconds().max(0) as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

impl Report {
    /// The one screen.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        let window = if self.window_seconds > 0.0 {
            format!("changes over {:.1} s", self.window_seconds)
        } else {
            "one reading, no rates".to_string()
        };
        line(format!(
            "edc-ingest status at {} ({window})",
            self.checked_at
        ));
        line(String::new());

        // Queues and the verdict.
        if self.broker.answered {
            line(format!(
                "{:<40} {:>9} {:>10} {:>9}",
                "queue", "ready", "change/s", "consumers"
            ));
            let delay: Vec<&QueueDepth> = self
                .broker
                .queues
                .iter()
                .filter(|q| q.role == "delay")
                .collect();
            for q in self.broker.queues.iter().filter(|q| q.role != "delay") {
                let label = format!("{} ({})", q.name, q.role.replace('_', "-"));
                if q.exists {
                    line(format!(
                        "{label:<40} {:>9} {:>10} {:>9}",
                        q.ready.unwrap_or(0),
                        signed(q.change_per_second),
                        q.consumers.unwrap_or(0)
                    ));
                } else {
                    line(format!("{label:<40} {:>9}", "absent"));
                }
                if q.role == "urgent" && !delay.is_empty() {
                    let ready: u64 = delay.iter().filter_map(|q| q.ready).sum();
                    let change = (self.window_seconds > 0.0)
                        .then(|| delay.iter().filter_map(|q| q.change_per_second).sum());
                    let present = delay.iter().filter(|q| q.exists).count();
                    line(format!(
                        "{:<40} {ready:>9} {:>10} {:>9}",
                        format!("{present} of {} delay queues", delay.len()),
                        signed(change),
                        "-"
                    ));
                }
            }
        } else {
            line(format!(
                "broker: could not be read: {}",
                self.broker.error.as_deref().unwrap_or("")
            ));
        }
        line(String::new());
        let b = &self.backlog;
        let waiting = b.ready.unwrap_or(0);
        let verdict = match b.verdict {
            "keeping_up" => "keeping up: nothing is waiting".to_string(),
            "draining" => format!(
                "draining: {waiting} waiting, {} by {:.1}/s; empty in about {}",
                "shrinking",
                -b.change_per_second.unwrap_or(0.0),
                humantime::format_duration(Duration::from_secs(
                    b.drained_in_seconds.unwrap_or(0.0).ceil() as u64
                ))
            ),
            "falling_behind" => format!(
                "falling behind: {waiting} waiting, growing by {:.1}/s",
                b.change_per_second.unwrap_or(0.0)
            ),
            "not_consumed" => {
                format!("not consumed: {waiting} waiting and no consumer on the work queues")
            }
            "level" => format!(
                "level: {waiting} waiting, {}",
                if self.window_seconds > 0.0 {
                    "neither shrinking nor growing"
                } else {
                    "trend unknown with no window"
                }
            ),
            _ => "unknown: the broker could not be read".to_string(),
        };
        line(format!("verdict: {verdict}"));
        line(String::new());

        // The database.
        if self.database.answered {
            line(format!(
                "{:<40} {:>9} {:>9}",
                "dead letters recorded (rejections)", "last hour", "last day"
            ));
            let recent: Vec<&KindCount> = self
                .database
                .dead_letters_by_kind
                .iter()
                .filter(|k| k.last_day > 0)
                .collect();
            if recent.is_empty() {
                line("  none in the last day".into());
            }
            for k in recent {
                line(format!(
                    "  {:<38} {:>9} {:>9}",
                    k.kind, k.last_hour, k.last_day
                ));
            }
            line(
                "  (the dead-letter queue's content by kind, the broker's own included: edc-ingest dlq list)"
                    .into(),
            );
            line(String::new());
            if let Some(open) = &self.database.open_batches {
                if open.count == 0 {
                    line("open batches: none".into());
                } else {
                    line(format!("open batches: {} (oldest first)", open.count));
                    for o in &open.oldest {
                        line(format!(
                            "  {}  {} of {} outcomes, first {} ago",
                            o.batch_id,
                            o.outcomes,
                            o.expected,
                            age(&o.first_outcome_at)
                        ));
                    }
                    if open.count > open.oldest.len() as i64 {
                        line(format!(
                            "  ... and {} more",
                            open.count - open.oldest.len() as i64
                        ));
                    }
                }
            }
        } else {
            line(format!(
                "database: could not be read: {}",
                self.database.error.as_deref().unwrap_or("")
            ));
        }
        line(String::new());

        // The replicas.
        if self.replicas.is_empty() {
            line("replicas: none asked (http.listen is off here; give --metrics URL)".into());
        } else {
            line("replicas (/metrics):".into());
        }
        for r in &self.replicas {
            if !r.answered {
                line(format!(
                    "  {}: unreachable: {}",
                    r.url,
                    r.error.as_deref().unwrap_or("")
                ));
                continue;
            }
            let yes_no = |v: Option<bool>, yes: &str, no: &str| match v {
                Some(true) => yes.to_string(),
                Some(false) => no.to_string(),
                None => "?".to_string(),
            };
            let n = |v: Option<i64>| v.map_or("?".into(), |v| v.to_string());
            line(format!(
                "  {}: version {}, {}, {}, database gate {}, {}/{} workers busy, {} in flight, outbox {} (lag {:.1} s)",
                r.url,
                r.version.as_deref().unwrap_or("?"),
                yes_no(r.ready, "ready", "NOT ready"),
                yes_no(
                    r.broker_connected,
                    "broker connected",
                    "broker NOT connected"
                ),
                yes_no(r.db_gate_open, "open", "CLOSED (paused for an outage)"),
                n(r.workers_busy),
                n(r.workers),
                n(r.deliveries_in_flight),
                n(r.outbox_backlog),
                r.relay_lag_seconds.unwrap_or(0.0)
            ));
            if let Some(rates) = &r.rates_per_second {
                let latency = r
                    .publish_to_commit_mean_seconds
                    .map_or(String::new(), |s| format!("; publish to commit {s:.3} s"));
                line(format!("      {}{latency}", rates_text(rates)));
            } else if r.restarted {
                line("      restarted during the window: no rates".into());
            }
        }
        if let Some(total) = &self.total_rates_per_second
            && self.replicas.len() > 1
        {
            line(format!("  all replicas: {}", rates_text(total)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metrics_address_may_omit_the_scheme_and_the_path() {
        assert_eq!(
            metrics_url("127.0.0.1:9090"),
            "http://127.0.0.1:9090/metrics"
        );
        assert_eq!(
            metrics_url("http://10.0.0.7:9090"),
            "http://10.0.0.7:9090/metrics"
        );
        assert_eq!(metrics_url("http://h:1/m"), "http://h:1/m");
    }

    #[test]
    fn rates_are_the_counters_increase_over_the_time_between_scrapes() {
        let page = |accepted: u32, sum: f64, count: u32| {
            format!(
                "# TYPE edc_workers gauge\nedc_workers 8\nedc_ready 1\n\
                 edc_build_info{{version=\"0.1.0\"}} 1\n\
                 edc_messages_total{{outcome=\"accepted\"}} {accepted}\n\
                 edc_messages_total{{outcome=\"queried\"}} 10\n\
                 edc_deliveries_in_flight{{lane=\"normal\"}} 3\n\
                 edc_deliveries_in_flight{{lane=\"urgent\"}} 1\n\
                 edc_publish_to_commit_seconds_sum {sum}\n\
                 edc_publish_to_commit_seconds_count {count}\n"
            )
        };
        let a = parse_metrics(&page(100, 1.0, 10)).unwrap();
        let mut b = parse_metrics(&page(400, 7.0, 40)).unwrap();
        b.at = a.at + Duration::from_secs(2);
        let r = replica("u", Ok(a), Some(Ok(b)));
        assert!(r.answered && !r.restarted);
        assert_eq!(r.version.as_deref(), Some("0.1.0"));
        assert_eq!(r.ready, Some(true));
        assert_eq!(r.deliveries_in_flight, Some(4));
        let rates = r.rates_per_second.unwrap();
        assert_eq!(rates.accepted, 150.0);
        assert_eq!(rates.stored, 150.0);
        assert_eq!(rates.queried, 0.0);
        assert_eq!(r.publish_to_commit_mean_seconds, Some(0.2));

        let a = parse_metrics(&page(400, 0.0, 0)).unwrap();
        let mut b = parse_metrics(&page(5, 0.0, 0)).unwrap();
        b.at = a.at + Duration::from_secs(1);
        let r = replica("u", Ok(a), Some(Ok(b)));
        assert!(r.restarted && r.rates_per_second.is_none());

        assert!(parse_metrics("hello 1\n").is_err());
        let r = replica("u", Err("cannot connect".into()), None);
        assert!(!r.answered && r.error.as_deref() == Some("cannot connect"));
    }

    fn broker_with(queues: Vec<(&'static str, u64, f64, u64)>) -> BrokerPart {
        BrokerPart {
            answered: true,
            error: None,
            queues: queues
                .into_iter()
                .map(|(role, ready, change, consumers)| QueueDepth {
                    role,
                    name: role.into(),
                    exists: true,
                    ready: Some(ready),
                    consumers: Some(consumers),
                    change_per_second: Some(change),
                })
                .collect(),
        }
    }

    #[test]
    fn the_verdict_follows_the_backlog_and_its_trend() {
        let w = Duration::from_secs(5);
        let verdict = |q| backlog(&broker_with(q), w);
        assert_eq!(
            verdict(vec![("work", 0, 0.0, 1), ("dead_letter", 9, 0.0, 0)]).verdict,
            "keeping_up"
        );
        let b = verdict(vec![
            ("work", 100, -40.0, 1),
            ("urgent", 0, 0.0, 1),
            ("delay", 0, -10.0, 0),
        ]);
        assert_eq!(b.verdict, "draining");
        assert_eq!(b.drained_in_seconds, Some(2.0));
        assert_eq!(
            verdict(vec![("work", 100, 40.0, 1)]).verdict,
            "falling_behind"
        );
        assert_eq!(verdict(vec![("work", 100, 0.0, 0)]).verdict, "not_consumed");
        assert_eq!(verdict(vec![("work", 100, 0.2, 2)]).verdict, "level");
        let down = BrokerPart {
            answered: false,
            error: Some("refused".into()),
            queues: vec![],
        };
        assert_eq!(backlog(&down, w).verdict, "unknown");
    }
}
