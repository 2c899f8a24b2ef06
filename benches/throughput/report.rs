//! The one table: every figure, its target and whether it is met, the drain rates as multiples of
//! the plain consumer baseline, and the ratios end to end / ceiling. Rendered by `render.rs`, stored
//! in `results.json` as `rows`.

use serde::Serialize;

use crate::endtoend::EndToEnd;
use crate::{Measured, Params, Results};

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub section: String,
    pub measure: String,
    pub value: String,
    pub target: String,
    /// `None`: no target, or not measured in this run.
    pub met: Option<bool>,
}

/// `12345.6` -> `12,346`.
pub fn int(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < -0.5 { format!("-{out}") } else { out }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The value of a measurement, or why there is none.
fn show<T>(m: &Measured<T>, f: impl Fn(&T) -> String) -> String {
    match m {
        Measured::Ok(v) => f(v),
        Measured::Unsupported(_) => "best configuration not supported by this build".into(),
        Measured::Failed(e) => format!("FAILED: {}", e.chars().take(160).collect::<String>()),
        Measured::Skipped => "skipped".into(),
    }
}

/// Whether a target is met: a failed or unsupported measurement does not meet it.
fn meets<T>(m: &Measured<T>, ok: impl Fn(&T) -> bool) -> Option<bool> {
    match m {
        Measured::Ok(v) => Some(ok(v)),
        Measured::Unsupported(_) | Measured::Failed(_) => Some(false),
        Measured::Skipped => None,
    }
}

/// Rows, added section by section.
struct Table {
    rows: Vec<Row>,
    section: &'static str,
}

impl Table {
    fn section(&mut self, name: &'static str) {
        self.section = name;
    }

    fn judged(&mut self, measure: String, value: String, target: &str, met: Option<bool>) {
        self.rows.push(Row {
            section: self.section.into(),
            measure,
            value,
            target: target.into(),
            met,
        });
    }

    /// A row without a target.
    fn info(&mut self, measure: impl Into<String>, value: String) {
        self.judged(measure.into(), value, "", None);
    }
}

pub fn rows(r: &Results) -> Vec<Row> {
    let mut t = Table {
        rows: Vec::new(),
        section: "",
    };
    machine(&mut t, r);
    ceilings(&mut t, r);
    baseline(&mut t, r);
    end_to_end(&mut t, r);
    fast_lane(&mut t, r);
    lone(&mut t, r);
    sustained(&mut t, r);
    memory(&mut t, r);
    t.section("workers sweep");
    for point in &r.workers {
        t.info(
            format!(
                "workers {0} (pool {0}, batch 1), {1} msgs",
                point.workers,
                int(r.params.sweep_messages as f64)
            ),
            show(&point.result, |d| format!("{} rec/s", int(d.rate))),
        );
    }
    ratios(&mut t, r);
    let judged: Vec<bool> = t.rows.iter().filter_map(|r| r.met).collect();
    let met = judged.iter().filter(|m| **m).count();
    t.section("summary");
    t.info(
        "targets met",
        format!(
            "{met} of {} (run took {:.0} s)",
            judged.len(),
            r.wall_seconds
        ),
    );
    t.rows
}

fn machine(t: &mut Table, r: &Results) {
    let (m, p, d) = (&r.machine, &r.params, &r.dataset);
    t.section("machine");
    t.info("CPUs (nproc)", m.nproc.to_string());
    let gib = m.mem_total_kib as f64 / 1048576.0;
    t.info("memory (MemTotal)", format!("{gib:.1} GiB"));
    t.info(
        "CPU model / kernel",
        format!("{} / {}", m.cpu_model, m.kernel),
    );
    let rabbit = format!("{} / {}", m.rabbitmq_version, m.erlang_version);
    t.info("RabbitMQ / Erlang", rabbit);
    t.info("PostgreSQL", m.postgres_version.clone());
    t.info("PostgreSQL settings", m.postgres_settings.clone());
    let load = format!("{} -> {}", m.loadavg_start, m.loadavg_end);
    t.info("load average 1/5/15 min, at start -> end", load);
    t.info("commit", m.git_commit.clone());
    t.info(
        format!("dataset: generated DEMO-001 records, seed {}", p.seed),
        format!(
            "{} msgs: {} accepted, {} queried, {} rejected; {} B mean body",
            int(d.messages as f64),
            int(d.accepted as f64),
            int(d.queried as f64),
            int(d.rejected as f64),
            d.mean_body_bytes
        ),
    );
    let configs = format!(
        "default = {}; best = {}",
        p.default.describe(),
        p.best.describe()
    );
    t.info("configurations", configs);
    if p.quick {
        let large = int(p.memory_large as f64);
        t.info(
            "--quick",
            format!("large memory backlog {large} instead of 1,000,000"),
        );
    }
}

fn ceilings(t: &mut Table, r: &Results) {
    let p = &r.params;
    t.section("broker ceiling");
    t.info(
        format!(
            "preload of {} msgs with tools::publish (confirms), mean",
            int(p.broker_messages as f64)
        ),
        show(&r.broker, |b| {
            b.publish_rate()
                .map_or("no run".into(), |v| format!("{} msg/s", int(v)))
        }),
    );
    for run in r.broker.ok().map(|b| b.runs.as_slice()).unwrap_or_default() {
        let label = run.ok().map_or("bare consumer".into(), |c| {
            format!(
                "bare consumer, prefetch {}, {}",
                c.prefetch,
                c.ack.describe()
            )
        });
        t.info(label, show(run, |c| format!("{} msg/s", int(c.rate))));
    }
    t.section("database ceiling");
    for (per_tx, how, m) in [
        (1, "CTE statement", &r.db_single),
        (p.db_batch, "unnest", &r.db_batched),
    ] {
        let what = if per_tx == 1 { "record" } else { "records" };
        t.info(
            format!(
                "{} connections, {per_tx} {what} per transaction ({how})",
                p.db_connections
            ),
            show(m, |d| {
                let cap = if d.capped { " (time cap)" } else { "" };
                format!("{} rec/s{cap}", int(d.rate))
            }),
        );
    }
}

fn baseline(t: &mut Table, r: &Results) {
    let n = int(r.params.baseline_messages as f64);
    let b = &r.baseline;
    t.section("plain consumer");
    t.info(
        format!(
            "Python, aio-pika + asyncpg, prefetch 16, pool 16, a transaction per record: drain of {n} preloaded msgs"
        ),
        show(b, |b| format!("{} rec/s ({:.1} s)", int(b.rate), b.seconds)),
    );
    t.info(
        "its CPU per record; of RabbitMQ / PostgreSQL / the whole machine",
        show(b, |b| {
            format!(
                "{:.0} us; {:.0} / {:.0} / {:.0} us (machine: {:.0} % of its cores busy)",
                b.cpu_us_per_record,
                b.broker_cpu_us_per_record,
                b.postgres_cpu_us_per_record,
                b.machine_cpu_us_per_record,
                b.machine_cpu_us_per_record * b.rate / 1e6 / r.machine.nproc as f64 * 100.0
            )
        }),
    );
    t.info(
        "its outcomes; preload rate",
        show(b, |b| {
            format!(
                "{} stored + {} rejected (dead-lettered, no reason); {} msg/s",
                int(b.consumer.stored as f64),
                int(b.consumer.rejected as f64),
                int(b.publish.rate)
            )
        }),
    );
}

/// A drain rate as a multiple of the plain consumer's; a missing figure on either side keeps its
/// status (so a target on it counts as not met).
fn over_baseline(e2e: &Measured<EndToEnd>, r: &Results) -> Measured<(f64, f64, f64)> {
    match (e2e, &r.baseline) {
        (Measured::Ok(e), Measured::Ok(b)) if b.rate > 0.0 => {
            Measured::Ok((e.drain.rate / b.rate, e.drain.rate, b.rate))
        }
        (Measured::Unsupported(w), _) => Measured::Unsupported(w.clone()),
        (Measured::Failed(w), _) => Measured::Failed(w.clone()),
        (_, Measured::Failed(w)) => Measured::Failed(format!("plain consumer: {w}")),
        _ => Measured::Skipped,
    }
}

fn end_to_end(t: &mut Table, r: &Results) {
    let n = int(r.params.e2e_messages as f64);
    t.section("end to end");
    for (label, e, rate_min, times_min, cpu_max) in [
        ("default", &r.e2e_default, 4_000.0, 3.5, 60.0),
        ("best", &r.e2e_best, 18_000.0, 14.0, 30.0),
    ] {
        t.judged(
            format!("{label}: drain of {n} preloaded msgs"),
            show(e, |e| {
                format!("{} rec/s ({:.1} s)", int(e.drain.rate), e.drain.seconds)
            }),
            &format!(">= {} rec/s", int(rate_min)),
            meets(e, |e| e.drain.rate >= rate_min),
        );
        let x = over_baseline(e, r);
        t.judged(
            format!("{label}: drain rate / the plain consumer's"),
            show(&x, |(x, e, b)| {
                format!("{x:.2}x ({} / {} rec/s)", int(*e), int(*b))
            }),
            &format!(">= {times_min}x"),
            meets(&x, |(x, _, _)| *x >= times_min),
        );
        t.judged(
            format!("{label}: daemon CPU (utime+stime) per record"),
            show(e, |e| {
                let d = &e.drain;
                format!("{:.1} us ({:.2} s)", d.cpu_us_per_record, d.cpu_seconds)
            }),
            &format!("<= {cpu_max} us"),
            meets(e, |e| e.drain.cpu_us_per_record <= cpu_max),
        );
        t.info(
            format!("{label}: CPU per record of RabbitMQ / PostgreSQL / the whole machine"),
            show(e, |e| {
                let d = &e.drain;
                format!(
                    "{:.0} / {:.0} / {:.0} us (machine: {:.0} % of its cores busy)",
                    d.broker_cpu_us_per_record,
                    d.postgres_cpu_us_per_record,
                    d.machine_cpu_us_per_record,
                    d.machine_cpu_us_per_record * d.rate / 1e6 / r.machine.nproc as f64 * 100.0
                )
            }),
        );
        t.info(
            format!("{label}: outcomes; peak RSS; preload rate; ack frames per record"),
            show(e, |e| {
                format!(
                    "{} stored + {} rejected; {}; {} msg/s; {}",
                    int(e.drain.stored as f64),
                    int(e.drain.rejected as f64),
                    mib(e.drain.peak_rss_kib),
                    int(e.publish.rate),
                    e.drain
                        .acks_per_record
                        .map_or("-".to_string(), |a| format!("{a:.3}"))
                )
            }),
        );
    }
}

fn fast_lane(t: &mut Table, r: &Results) {
    let p: &Params = &r.params;
    t.section("fast lane");
    for (label, m) in [("default", &r.fastlane_default), ("best", &r.fastlane_best)] {
        t.judged(
            format!(
                "{label}: urgent record publish-to-commit behind a {} backlog, p50 / max of {}",
                int(p.fastlane_backlog as f64),
                p.fastlane_samples
            ),
            show(m, |x| {
                format!(
                    "{:.1} / {:.1} ms ({} of the backlog still waiting)",
                    x.p50_ms,
                    x.max_ms,
                    int(x.backlog_left as f64)
                )
            }),
            "max <= 1,000 ms",
            meets(m, |x| x.max_ms <= 1000.0),
        );
    }
}

fn lone(t: &mut Table, r: &Results) {
    let p: &Params = &r.params;
    t.section("lone record");
    for (label, m) in [("default", &r.lone_default), ("best", &r.lone_best)] {
        t.judged(
            format!(
                "{label}: a lone record on an idle daemon, publish-to-commit p50 / max of {}",
                p.lone_samples
            ),
            show(m, |x| {
                format!("{:.1} / {:.1} ms", x.latency.p50_ms, x.latency.max_ms)
            }),
            "max <= 20 ms",
            meets(m, |x| x.latency.max_ms <= 20.0),
        );
    }
}

fn sustained(t: &mut Table, r: &Results) {
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
            target.and_then(|v| meets(m, |x| x.max_rate >= v)),
        );
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
            meets(m, |x| x.latency.publish_to_commit.p99_ms <= 50.0),
        );
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
            meets(m, relay_lag_met),
        );
    }
}

/// The relay's lag stayed under 1 s at the highest rate kept up with, and every event arrived.
fn relay_lag_met(x: &crate::sustained::Sustained) -> bool {
    let at = x.relay.at_max_rate.as_ref().and_then(|l| l.lag.as_ref());
    at.is_some_and(|l| l.max_ms < 1000.0) && x.relay.received as i64 >= x.relay.expected
}

fn memory(t: &mut Table, r: &Results) {
    let p = &r.params;
    let (small, large) = (int(p.memory_small as f64), int(p.memory_large as f64));
    let limit = 48 * 1024;
    t.section("memory");
    for (label, m) in [("default", &r.memory_default), ("best", &r.memory_best)] {
        t.judged(
            format!("{label}: peak RSS (VmHWM), {small} backlog drained"),
            show(m, |x| mib(x.small.peak_rss_kib)),
            "<= 48 MiB",
            meets(m, |x| x.small.peak_rss_kib <= limit),
        );
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
            meets(m, |x| x.large.peak_rss_kib <= limit),
        );
        t.judged(
            format!("{label}: peak RSS large / small backlog"),
            show(m, |x| format!("{:.3}", x.ratio)),
            "within 10 %",
            meets(m, |x| (x.ratio - 1.0).abs() <= 0.10),
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
fn ratios(t: &mut Table, r: &Results) {
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
