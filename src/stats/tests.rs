//! Unit tests of the counters and their text format.

use super::*;

/// The value of one sample line of the text output, e.g. `edc_messages_total{outcome="accepted"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn the_summary_and_the_metrics_read_the_same_counters() {
    let s = Stats::new();
    s.accepted.inc();
    s.accepted.inc();
    s.queried.inc();
    s.requeued.inc();
    s.dead_lettered(RejectKind::Invalid);
    s.dead_lettered(RejectKind::Poison);
    s.dead_lettered(RejectKind::Invalid);
    s.acks.fetch_add(3, Relaxed);
    let summary = s.summary();
    assert_eq!(
        summary.to_string(),
        "accepted=2 queried=1 duplicate=0 dead_lettered=3 (invalid=2 poison=1) retried=0 postponed=0 requeued=1 acks=3"
    );
    let text = s.encode();
    let m = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series} in\n{text}"));
    assert_eq!(m(r#"edc_messages_total{outcome="accepted"}"#), 2.0);
    assert_eq!(m(r#"edc_messages_total{outcome="queried"}"#), 1.0);
    assert_eq!(m(r#"edc_messages_total{outcome="requeued"}"#), 1.0);
    assert_eq!(m(r#"edc_messages_total{outcome="dead_lettered"}"#), 3.0);
    assert_eq!(m(r#"edc_messages_total{outcome="duplicate"}"#), 0.0);
    assert_eq!(m(r#"edc_dead_letters_total{kind="invalid"}"#), 2.0);
    assert_eq!(m(r#"edc_dead_letters_total{kind="poison"}"#), 1.0);
    assert_eq!(m(r#"edc_dead_letters_total{kind="too_large"}"#), 0.0);
    assert_eq!(
        m(&format!(
            r#"edc_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
}

#[test]
fn every_metric_the_dashboard_uses_is_served_and_nothing_else() {
    // The list of deploy/check/check_deploy.py (METRICS): the dashboard may use only these.
    let expected = [
        "edc_messages_total",
        "edc_dead_letters_total",
        "edc_records_stored_total",
        "edc_job_duration_seconds",
        "edc_publish_to_commit_seconds",
        "edc_commit_group_size",
        "edc_deliveries_in_flight",
        "edc_workers_busy",
        "edc_workers",
        "edc_pool_connections",
        "edc_pool_waiting",
        "edc_pool_size",
        "edc_db_gate_open",
        "edc_db_gate_closed_seconds_total",
        "edc_broker_reconnects_total",
        "edc_broker_sessions_total",
        "edc_broker_connected",
        "edc_outbox_backlog",
        "edc_relay_lag_seconds",
        "edc_events_published_total",
        "edc_events_parked_total",
        "edc_batches_open",
        "edc_reply_to_refused_total",
        "edc_ready",
        "edc_build_info",
    ];
    let text = Stats::new().encode();
    let mut served: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    served.sort_unstable();
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    assert_eq!(served, expected);
    // Every labelled family shows all its values from the start, so a rate() has a zero before
    // the first increment.
    for series in [
        r#"edc_messages_total{outcome="retried"}"#,
        r#"edc_dead_letters_total{kind="malformed"}"#,
        r#"edc_records_stored_total{status="queried"}"#,
        r#"edc_deliveries_in_flight{lane="urgent"}"#,
        r#"edc_pool_connections{state="idle"}"#,
        r#"edc_events_published_total{kind="callback"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series}");
    }
}

#[test]
fn in_flight_counts_until_the_guard_is_dropped() {
    let s = Stats::new();
    let a = s.in_flight(Lane::Normal);
    let b = s.in_flight(Lane::Normal);
    let u = s.in_flight(Lane::Urgent);
    assert_eq!(s.in_flight[Lane::Normal as usize].get(), 2);
    drop(a);
    drop(u);
    assert_eq!(s.in_flight[Lane::Normal as usize].get(), 1);
    assert_eq!(s.in_flight[Lane::Urgent as usize].get(), 0);
    drop(b);
    assert_eq!(s.in_flight[Lane::Normal as usize].get(), 0);
}

#[test]
fn publish_to_commit_counts_a_clock_ahead_of_ours_as_zero() {
    let s = Stats::new();
    s.committed(Some(SystemTime::now() + Duration::from_secs(60)));
    s.committed(None);
    let text = s.encode();
    assert_eq!(
        sample(&text, "edc_publish_to_commit_seconds_sum"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "edc_publish_to_commit_seconds_count"),
        Some(1.0)
    );
}
