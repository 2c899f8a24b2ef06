//! The replicas' part of `status`: each replica's `/metrics`, scraped at the start and after the
//! window; its rates are the counters' increase over that time. The daemon keeps no history of its
//! own (Prometheus does), so the rates are those of the window. A replica that does not answer is
//! reported as such, never an error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::printable::printable;
use crate::tools::healthcheck;

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
    pub(super) fn add(&mut self, o: &Rates) {
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

pub(super) async fn replicas_part(urls: &[String], window: Duration) -> Vec<Replica> {
    let first = scrape_all(urls).await;
    let second = if window.is_zero() || urls.is_empty() {
        None
    } else {
        // A whole window from the end of the first scrapes: the rates span at least the window,
        // however long a slow replica took to answer first.
        tokio::time::sleep(window).await;
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
}
