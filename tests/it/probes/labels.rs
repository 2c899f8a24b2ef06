//! The labels a scrape may carry: a bounded set of names and values, never a record's value.

use crate::helpers::*;

/// The label names the daemon may use, and the only values each may take (`le` aside, and
/// `version`, which is the crate's).
const LABELS: [(&str, &[&str]); 5] = [
    (
        "outcome",
        &[
            "accepted",
            "queried",
            "duplicate",
            "dead_lettered",
            "postponed",
            "retried",
            "requeued",
        ],
    ),
    (
        "kind",
        &[
            "malformed",
            "too_large",
            "invalid",
            "conflict",
            "panic",
            "failed",
            "poison",
            "event",
            "callback",
        ],
    ),
    ("status", &["accepted", "queried"]),
    ("lane", &["normal", "urgent"]),
    ("state", &["in_use", "idle"]),
];

/// Every label of the scrape is one of [`LABELS`] (or a histogram bound, or the version).
pub fn assert_labels_bounded(m: &Metrics) {
    for (name, value) in m.labels() {
        match name.as_str() {
            "le" => assert!(
                value == "+Inf" || value.parse::<f64>().is_ok(),
                "le={value}"
            ),
            "version" => assert_eq!(value, env!("CARGO_PKG_VERSION")),
            other => {
                let allowed = LABELS
                    .iter()
                    .find(|(n, _)| *n == other)
                    .unwrap_or_else(|| panic!("unexpected label {other}={value}"))
                    .1;
                assert!(allowed.contains(&value.as_str()), "{other}={value}");
            }
        }
    }
}
