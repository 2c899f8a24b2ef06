//! The rows of the load stages in the one table (see `report.rs`): sustained load and the relay's
//! lag, memory, and the ratios end to end / ceiling.

use crate::before::BeforeAfter;
use crate::endtoend::EndToEnd;
use crate::report::{Table, int, meets, mib, show, why};
use crate::{Measured, Params, Results};

pub(crate) fn sustained(t: &mut Table, r: &Results) {
    let p: &Params = &r.params;
    let rates: Vec<String> = p
        .sustained_rates
        .iter()
        .map(|r| format!("{}k", r / 1000))
        .collect();
    t.section("sustained");
    for (label, m, target) in [
        ("default", &r.sustained_default, None),
        ("best", &r.sustained_best, Some(12_000)),
    ] {
        let met = target.and_then(|v| meets(m, |x| x.max_rate >= v));
        t.judged(
            format!(
                "{label}: highest rate kept up with ({} s steps: {})",
                p.sustained_step_seconds,
                rates.join(", ")
            ),
            show(m, |x| {
                let stop = x.steps.iter().find(|s| !s.kept_up).map(|s| {
                    format!(
                        "; {}/s not: sent {}/s, backlog {} ({})",
                        int(s.target as f64),
                        int(s.achieved),
                        int(s.backlog_end as f64),
                        s.limited_by.as_deref().unwrap_or("?")
                    )
                });
                format!(
                    "{} msg/s{}",
                    int(x.max_rate as f64),
                    stop.unwrap_or_default()
                )
            }),
            target.map_or("", |_| ">= 12,000 msg/s"),
            met,
            why(m, met, |x| sustained_reason(x, r)),
        );
        let met = meets(m, |x| x.latency.publish_to_commit.p99_ms <= 50.0);
        t.judged(
            format!("{label}: publish-to-commit latency at half that rate, p50 / p99 / max"),
            show(m, |x| {
                let l = &x.latency.publish_to_commit;
                format!(
                    "{:.1} / {:.1} / {:.1} ms at {}/s ({} records)",
                    l.p50_ms,
                    l.p99_ms,
                    l.max_ms,
                    int(x.latency.rate as f64),
                    int(l.samples as f64)
                )
            }),
            "p99 <= 50 ms",
            met,
            why(m, met, |x| {
                let c = x.config;
                format!(
                    "p99 {:.1} ms at {}/s: a record waits for its group (batch {}, {} committer(s)) and the group's commit, on {} cores the publisher, the broker and the database share (load average {} at the run's end)",
                    x.latency.publish_to_commit.p99_ms,
                    int(x.latency.rate as f64),
                    c.batch_size,
                    c.committers,
                    r.machine.nproc,
                    r.machine.loadavg_end
                )
            }),
        );
        let met = meets(m, relay_lag_met);
        t.judged(
            format!(
                "{label}: outbox relay lag (commit to event delivered) at the highest rate kept up with, p50 / p99 / max"
            ),
            show(m, |x| {
                let at = match x.relay.at_max_rate.as_ref().and_then(|l| l.lag.as_ref()) {
                    Some(l) => format!(
                        "{:.1} / {:.1} / {:.1} ms at {}/s ({} events)",
                        l.p50_ms,
                        l.p99_ms,
                        l.max_ms,
                        int(x.max_rate as f64),
                        int(l.samples as f64)
                    ),
                    None => "no rate kept up with".to_string(),
                };
                let whole = x
                    .relay
                    .whole
                    .lag
                    .as_ref()
                    .map_or("-".to_string(), |l| format!("{:.1} ms", l.max_ms));
                let missing = x.relay.expected - x.relay.received as i64;
                let missing = if missing > 0 {
                    format!("; {} events never arrived", int(missing as f64))
                } else {
                    String::new()
                };
                format!("{at}; whole stage max {whole}{missing}")
            }),
            "max < 1,000 ms",
            met,
            why(m, met, |x| {
                let missing = x.relay.expected - x.relay.received as i64;
                if missing > 0 {
                    format!(
                        "{} of {} record events never arrived on the events exchange",
                        int(missing as f64),
                        int(x.relay.expected as f64)
                    )
                } else {
                    "the relay fell behind the commits at this rate: its rounds of claim, publish and confirm did not keep up with the transactions".into()
                }
            }),
        );
    }
}

/// Why the best configuration kept up with less than the target: the first step it did not keep
/// up with, and what the end-to-end drain of the same configuration reached.
fn sustained_reason(x: &crate::sustained::Sustained, r: &Results) -> String {
    let step = x.steps.iter().find(|s| !s.kept_up);
    let at = step.map_or("no step fell behind".to_string(), |s| {
        let who = match s.limited_by.as_deref() {
            Some("publisher") => "the bench's publisher could not send at that rate on these cores",
            _ => "the daemon's backlog grew",
        };
        format!(
            "at {}/s {who} (sent {}/s, {} waiting at the step's end)",
            int(s.target as f64),
            int(s.achieved),
            int(s.backlog_end as f64)
        )
    });
    let drain = match &r.e2e_best {
        Measured::Ok(e) => format!(
            "; the same configuration drained a preloaded backlog at {} rec/s with no publisher sharing the cores (the end-to-end rows say what bounds that)",
            int(e.drain.rate)
        ),
        _ => String::new(),
    };
    format!("{at}{drain}")
}

/// The relay's lag stayed under 1 s at the highest rate kept up with, and every event arrived.
fn relay_lag_met(x: &crate::sustained::Sustained) -> bool {
    let at = x.relay.at_max_rate.as_ref().and_then(|l| l.lag.as_ref());
    at.is_some_and(|l| l.max_ms < 1000.0) && x.relay.received as i64 >= x.relay.expected
}

pub(crate) fn memory(t: &mut Table, r: &Results) {
    let p = &r.params;
    let (small, large) = (int(p.memory_small as f64), int(p.memory_large as f64));
    let limit = 48 * 1024;
    t.section("memory");
    for (label, m) in [("default", &r.memory_default), ("best", &r.memory_best)] {
        let in_flight = |x: &crate::memory::Memory| {
            format!(
                "{} deliveries in flight, each with its body, and groups of up to {} records",
                x.config.prefetch(),
                x.config.batch_size.max(1) * x.config.committers.max(1)
            )
        };
        let met = meets(m, |x| x.small.peak_rss_kib <= limit);
        t.judged(
            format!("{label}: peak RSS (VmHWM), {small} backlog drained"),
            show(m, |x| mib(x.small.peak_rss_kib)),
            "<= 48 MiB",
            met,
            why(m, met, |x| {
                format!("{}: {}", mib(x.small.peak_rss_kib), in_flight(x))
            }),
        );
        let met = meets(m, |x| x.large.peak_rss_kib <= limit);
        t.judged(
            format!(
                "{label}: peak RSS, {large} backlog, {} s of work",
                p.memory_work_seconds
            ),
            show(m, |x| {
                let drained = if x.large.drained { ", drained" } else { "" };
                let n = int(x.large.processed as f64);
                format!("{} ({n} processed{drained})", mib(x.large.peak_rss_kib))
            }),
            "<= 48 MiB",
            met,
            why(m, met, |x| {
                format!("{}: {}", mib(x.large.peak_rss_kib), in_flight(x))
            }),
        );
        let met = meets(m, |x| (x.ratio - 1.0).abs() <= 0.10);
        t.judged(
            format!("{label}: peak RSS large / small backlog"),
            show(m, |x| format!("{:.3}", x.ratio)),
            "within 10 %",
            met,
            why(m, met, |x| {
                let more = (x.large.peak_rss_kib as f64 - x.small.peak_rss_kib as f64) / 1024.0;
                let bound = if x.large.peak_rss_kib <= limit {
                    "; both under the 48 MiB bound, so a higher point of the same bound, not growth with the backlog"
                } else {
                    ""
                };
                format!(
                    "{} against {} ({more:.1} MiB more) with the same {}, over {:.0} s of work against {:.0} s{bound}",
                    mib(x.large.peak_rss_kib),
                    mib(x.small.peak_rss_kib),
                    in_flight(x),
                    x.large.seconds,
                    x.small.seconds,
                )
            }),
        );
    }
}

/// `e2e / ceiling`; when the e2e figure is missing, the ratio shares its status (so a target on an
/// unsupported or failed drain counts as not met).
fn ratio(e2e: &Measured<EndToEnd>, ceiling: Option<f64>) -> Measured<f64> {
    match (e2e, ceiling) {
        (Measured::Ok(e), Some(c)) if c > 0.0 => Measured::Ok(e.drain.rate / c),
        (Measured::Unsupported(w), _) => Measured::Unsupported(w.clone()),
        (Measured::Failed(w), _) => Measured::Failed(w.clone()),
        _ => Measured::Skipped,
    }
}

/// The ratios to the ceilings: for reading, not targets (issue 14's targets are the multiples of the
/// plain consumer's rate, in the end-to-end section).
pub(crate) fn ratios(t: &mut Table, r: &Results) {
    let p = &r.params;
    let broker = |prefetch: usize, multiple: bool| {
        let b = r.broker.ok()?;
        Some(b.find(u16::try_from(prefetch).ok()?, multiple)?.rate)
    };
    let (dp, bp) = (p.default.prefetch(), p.best.prefetch());
    let rows = [
        (
            "e2e default / DB ceiling, 1 record per transaction".to_string(),
            ratio(&r.e2e_default, r.db_single.ok().map(|d| d.rate)),
        ),
        (
            format!(
                "e2e best / DB ceiling, {} records per transaction",
                p.db_batch
            ),
            ratio(&r.e2e_best, r.db_batched.ok().map(|d| d.rate)),
        ),
        (
            format!("e2e default / broker ceiling, prefetch {dp}, individual acks"),
            ratio(&r.e2e_default, broker(dp, false)),
        ),
        (
            format!("e2e best / broker ceiling, prefetch {bp}, multiple acks"),
            ratio(&r.e2e_best, broker(bp, true)),
        ),
    ];
    t.section("ratios");
    for (label, m) in rows {
        t.info(label, show(&m, |x| format!("{x:.2}")));
    }
}

pub(crate) fn share(t: &mut Table, r: &Results) {
    t.section("fair share");
    let met = meets(&r.share, |s| s.smaller >= 0.4);
    t.judged(
        format!(
            "default, two replicas on one backlog of {}: each one's part",
            int(r.params.share_messages as f64)
        ),
        show(&r.share, |s| {
            format!(
                "{} and {} ({:.1} % the smaller); {} rec/s together; {} PostgreSQL connections at most",
                int(s.parts[0] as f64),
                int(s.parts[1] as f64),
                s.smaller * 100.0,
                int(s.rate),
                s.peak_connections
            )
        }),
        "the smaller >= 40 %",
        met,
        why(&r.share, met, |s| {
            format!(
                "the smaller took {:.1} %: one replica's consumer held the broker's deliveries ahead of the other's",
                s.smaller * 100.0
            )
        }),
    );
}

pub(crate) fn before_after(t: &mut Table, r: &Results) {
    let m = &r.before_after;
    if matches!(m, crate::Measured::Skipped) {
        return;
    }
    t.section("before / after");
    let medians = |after: bool| {
        show(m, move |b| {
            let side = if after { &b.after } else { &b.before };
            let x = BeforeAfter::medians(side);
            format!(
                "{} rec/s; {:.1} us daemon, {:.1} us PostgreSQL, {:.1} us RabbitMQ, {:.1} us machine CPU a record; {:.2} daemon context switches a record (medians of {})",
                int(x.rate),
                x.daemon_us,
                x.postgres_us,
                x.broker_us,
                x.machine_us,
                x.switches,
                side.len()
            )
        })
    };
    let what = show(m, |b| {
        format!(
            "{}, {} messages a drain",
            b.config.describe(),
            int(b.messages as f64)
        )
    });
    t.info("configuration", what);
    t.info("before (the earlier build)", medians(false));
    t.info("after (this build)", medians(true));
    t.info(
        "after / before",
        show(m, |b| {
            let (x, y) = (BeforeAfter::medians(&b.before), BeforeAfter::medians(&b.after));
            format!(
                "rate x{:.2}; daemon CPU x{:.2}, PostgreSQL x{:.2}, RabbitMQ x{:.2}, machine x{:.2} a record; context switches x{:.2}",
                y.rate / x.rate,
                y.daemon_us / x.daemon_us,
                y.postgres_us / x.postgres_us,
                y.broker_us / x.broker_us,
                y.machine_us / x.machine_us,
                y.switches / x.switches
            )
        }),
    );
}
