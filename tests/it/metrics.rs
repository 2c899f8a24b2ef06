//! `/metrics` of a running daemon, read and picked apart (part of the test harness, `helpers`).

use super::http_get;

/// `/metrics` of the daemon at `port`; panics if it does not answer 200.
pub async fn scrape(port: u16) -> Metrics {
    match http_get(port, "/metrics").await {
        Some((200, body)) => Metrics(body),
        other => panic!("/metrics on port {port}: {other:?}"),
    }
}

/// One scrape, in the Prometheus text format.
#[derive(Clone, Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of one series, written as in the text: `edc_ready`, `edc_messages_total{outcome="accepted"}`.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// As [`Metrics::get`], as a count; panics if the series is missing.
    pub fn count(&self, series: &str) -> i64 {
        let v = self
            .get(series)
            .unwrap_or_else(|| panic!("{series} not in the scrape:\n{}", self.0));
        v as i64
    }

    /// Every sample line's labels, as (name, value) pairs.
    pub fn labels(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for line in self.0.lines().filter(|l| !l.starts_with('#')) {
            let Some((_, rest)) = line.split_once('{') else {
                continue;
            };
            let Some((labels, _)) = rest.rsplit_once('}') else {
                continue;
            };
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect("label=value");
                out.push((k.to_string(), v.trim_matches('"').to_string()));
            }
        }
        out
    }
}
