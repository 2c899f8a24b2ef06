//! The one table: every figure, its target and whether it is met, the drain rates as multiples of
//! the plain consumer baseline, and the ratios end to end / ceiling. Rendered by `render.rs`, stored
//! in `results.json` as `rows`.

use serde::Serialize;

use crate::daemon::Drain;
use crate::endtoend::EndToEnd;
use crate::report_load::{before_after, memory, ratios, share, sustained};
use crate::{Measured, Params, Results};

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub section: String,
    pub measure: String,
    pub value: String,
    pub target: String,
    /// `None`: no target, or not measured in this run.
    pub met: Option<bool>,
    /// Why a target is not met, worked out from the run's own figures; `None` where it is met or
    /// there is no target.
    pub why: Option<String>,
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

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The value of a measurement, or why there is none.
pub(crate) fn show<T>(m: &Measured<T>, f: impl Fn(&T) -> String) -> String {
    match m {
        Measured::Ok(v) => f(v),
        Measured::Unsupported(_) => "best configuration not supported by this build".into(),
        Measured::Failed(e) => format!("FAILED: {}", e.chars().take(160).collect::<String>()),
        Measured::Skipped => "skipped".into(),
    }
}

/// Whether a target is met: a failed or unsupported measurement does not meet it.
pub(crate) fn meets<T>(m: &Measured<T>, ok: impl Fn(&T) -> bool) -> Option<bool> {
    match m {
        Measured::Ok(v) => Some(ok(v)),
        Measured::Unsupported(_) | Measured::Failed(_) => Some(false),
        Measured::Skipped => None,
    }
}

/// Why a target is not met: `f` of the measurement where there is one; a failed or unsupported
/// measurement says so (its value tells how). `None` unless `met` is `Some(false)`.
pub(crate) fn why<T>(
    m: &Measured<T>,
    met: Option<bool>,
    f: impl Fn(&T) -> String,
) -> Option<String> {
    if met != Some(false) {
        return None;
    }
    Some(match m {
        Measured::Ok(v) => f(v),
        Measured::Unsupported(_) => "this build does not support the configuration".into(),
        Measured::Failed(_) => "the measurement failed (its value says how)".into(),
        Measured::Skipped => return None,
    })
}

/// Rows, added section by section.
pub(crate) struct Table {
    rows: Vec<Row>,
    section: &'static str,
}

impl Table {
    pub(crate) fn section(&mut self, name: &'static str) {
        self.section = name;
    }

    /// A row with a target; `why` is the reason where it is not met (see [`why`]).
    pub(crate) fn judged(
        &mut self,
        measure: String,
        value: String,
        target: &str,
        met: Option<bool>,
        why: Option<String>,
    ) {
        self.rows.push(Row {
            section: self.section.into(),
            measure,
            value,
            target: target.into(),
            met,
            why,
        });
    }

    /// A row without a target.
    pub(crate) fn info(&mut self, measure: impl Into<String>, value: String) {
        self.judged(measure.into(), value, "", None, None);
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
    t.section("sweep");
    for point in &r.sweep {
        let c = point.config;
        t.info(
            format!(
                "workers {}, pool {}, batch {}, committers {}: drain of {} msgs",
                c.workers,
                c.pool_size,
                c.batch_size,
                c.committers,
                int(r.params.sweep_messages as f64)
            ),
            show(&point.result, |d| {
                format!(
                    "{} rec/s; {:.1} us CPU a record; {} connections at most; {}",
                    int(d.rate),
                    d.cpu_us_per_record,
                    d.peak_connections,
                    mib(d.peak_rss_kib)
                )
            }),
        );
    }
    share(&mut t, r);
    odm(&mut t, r);
    before_after(&mut t, r);
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
pub(crate) fn over_baseline(e2e: &Measured<EndToEnd>, r: &Results) -> Measured<(f64, f64, f64)> {
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
        ("default", &r.e2e_default, 4_500.0, 3.5, 60.0),
        ("best", &r.e2e_best, 15_000.0, 10.0, 30.0),
    ] {
        let nproc = r.machine.nproc;
        let met = meets(e, |e| e.drain.rate >= rate_min);
        t.judged(
            format!("{label}: drain of {n} preloaded msgs"),
            show(e, |e| {
                format!("{} rec/s ({:.1} s)", int(e.drain.rate), e.drain.seconds)
            }),
            &format!(">= {} rec/s", int(rate_min)),
            met,
            why(e, met, |e| rate_reason(&e.drain, nproc, rate_min)),
        );
        let x = over_baseline(e, r);
        let met = meets(&x, |(x, _, _)| *x >= times_min);
        t.judged(
            format!("{label}: drain rate / the plain consumer's"),
            show(&x, |(x, e, b)| {
                format!("{x:.2}x ({} / {} rec/s)", int(*e), int(*b))
            }),
            &format!(">= {times_min}x"),
            met,
            why(&x, met, |(_, e, b)| {
                format!(
                    "{times_min}x the plain consumer's {} rec/s is {} rec/s; the drain reached {}, bound as its own row says",
                    int(*b),
                    int(b * times_min),
                    int(*e)
                )
            }),
        );
        let met = meets(e, |e| e.drain.cpu_us_per_record <= cpu_max);
        t.judged(
            format!("{label}: daemon CPU (utime+stime) per record"),
            show(e, |e| {
                let d = &e.drain;
                format!("{:.1} us ({:.2} s)", d.cpu_us_per_record, d.cpu_seconds)
            }),
            &format!("<= {cpu_max} us"),
            met,
            why(e, met, |e| cpu_reason(&e.drain, cpu_max)),
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
            format!(
                "{label}: outcomes; peak RSS; PostgreSQL connections at most, of the most the settings allow; preload rate; ack frames per record; daemon context switches per record"
            ),
            show(e, |e| {
                let c = e.drain.config;
                format!(
                    "{} stored + {} rejected; {}; {} of {}; {} msg/s; {}; {}",
                    int(e.drain.stored as f64),
                    int(e.drain.rejected as f64),
                    mib(e.drain.peak_rss_kib),
                    e.drain.peak_connections,
                    c.connections_cap(),
                    int(e.publish.rate),
                    e.drain
                        .acks_per_record
                        .map_or("-".to_string(), |a| format!("{a:.3}")),
                    e.drain
                        .switches_per_record
                        .map_or("-".to_string(), |s| format!("{s:.2}"))
                )
            }),
        );
    }
}

/// Why a drain fell short of `target` records/s: the cores, when what the whole machine spent a
/// record leaves no room for the target on them; otherwise the deliveries in flight, waiting.
fn rate_reason(d: &Drain, nproc: usize, target: f64) -> String {
    let cores = nproc as f64;
    let busy = d.machine_cpu_us_per_record * d.rate / 1e6 / cores * 100.0;
    let ceiling = cores * 1e6 / d.machine_cpu_us_per_record;
    let rest = d.machine_cpu_us_per_record
        - d.cpu_us_per_record
        - d.postgres_cpu_us_per_record
        - d.broker_cpu_us_per_record;
    let rest = if rest >= 1.0 {
        format!(", the rest {rest:.0}")
    } else {
        String::new()
    };
    let spent = format!(
        "the whole machine spent {:.0} us a record (daemon {:.0}, PostgreSQL {:.0}, RabbitMQ {:.0}{rest}) with {busy:.0} % of its {nproc} cores busy",
        d.machine_cpu_us_per_record,
        d.cpu_us_per_record,
        d.postgres_cpu_us_per_record,
        d.broker_cpu_us_per_record,
    );
    if ceiling < target {
        format!(
            "the cores: {spent}; at that cost they allow at most {} rec/s, and {} rec/s needs at most {:.0} us a record for everything",
            int(ceiling),
            int(target),
            cores * 1e6 / target
        )
    } else {
        format!(
            "not the cores alone ({spent}; at that cost they allow {} rec/s): the {} deliveries in flight spent the rest waiting on the broker and the database",
            int(ceiling),
            d.config.prefetch()
        )
    }
}

/// Why the daemon's CPU a record is over `max`: its own work, not its hand-offs, where the context
/// switches a record say so.
fn cpu_reason(d: &Drain, max: f64) -> String {
    let switches = d
        .switches_per_record
        .map_or("? times".to_string(), |s| format!("{s:.2} times"));
    let acks = d
        .acks_per_record
        .map_or("? ack frames".to_string(), |a| format!("{a:.3} ack frames"));
    format!(
        "{:.1} us a record, {:.1} over: the daemon's threads gave up a core {switches} and sent {acks} a record, so the hand-offs between them are a small part; the rest is each record's own work: parsing, validation, de-identification, lapin's frames and the relay's publishes, none of them large alone in BENCHMARKS.md's profile",
        d.cpu_us_per_record,
        d.cpu_us_per_record - max
    )
}

fn fast_lane(t: &mut Table, r: &Results) {
    let p: &Params = &r.params;
    t.section("fast lane");
    for (label, m) in [("default", &r.fastlane_default), ("best", &r.fastlane_best)] {
        let met = meets(m, |x| x.max_ms <= 100.0);
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
            "max <= 100 ms",
            met,
            why(m, met, |x| {
                format!(
                    "its slowest took {:.1} ms: an urgent record skips the queue, not the database, whose commits it shares with the backlog's groups ({} of the backlog still waiting)",
                    x.max_ms,
                    int(x.backlog_left as f64)
                )
            }),
        );
    }
}

fn lone(t: &mut Table, r: &Results) {
    let p: &Params = &r.params;
    t.section("lone record");
    for (label, m) in [("default", &r.lone_default), ("best", &r.lone_best)] {
        let met = meets(m, |x| x.latency.max_ms <= 20.0);
        t.judged(
            format!(
                "{label}: a lone record on an idle daemon, publish-to-commit p50 / max of {}",
                p.lone_samples
            ),
            show(m, |x| {
                format!("{:.1} / {:.1} ms", x.latency.p50_ms, x.latency.max_ms)
            }),
            "max <= 20 ms",
            met,
            why(m, met, |x| {
                format!(
                    "its slowest took {:.1} ms (p50 {:.1}) with nothing else queued: the wait was the machine's (load average {} at the run's end), not a backlog",
                    x.latency.max_ms,
                    x.latency.p50_ms,
                    r.machine.loadavg_end
                )
            }),
        );
    }
}

/// The import's peak RSS must not grow with the file: a streaming reader holds one form.
const ODM_IMPORT_RSS_KIB: u64 = 32 * 1024;

fn odm(t: &mut Table, r: &Results) {
    t.section("ODM");
    let n = r.params.odm_forms;
    t.info(
        format!("odm import, {} forms generated", int(n as f64)),
        show(&r.odm, |o| {
            let i = &o.import;
            format!(
                "{} published, {:.1} MB in {:.2} s: {:.1} MB/s, {} forms/s",
                int(i.published as f64),
                i.file_bytes as f64 / 1e6,
                i.seconds,
                i.mb_per_s,
                int(i.forms_per_s)
            )
        }),
    );
    let met = meets(&r.odm, |o| o.import.peak_rss_kib <= ODM_IMPORT_RSS_KIB);
    t.judged(
        "odm import peak RSS".into(),
        show(&r.odm, |o| mib(o.import.peak_rss_kib)),
        "<= 32 MiB",
        met,
        why(&r.odm, met, |o| {
            format!(
                "{} at the most for a file of {:.1} MB: the import held more than its one form and the publishes awaiting confirmation, and grew with the file",
                mib(o.import.peak_rss_kib),
                o.import.file_bytes as f64 / 1e6
            )
        }),
    );
    let drain = |d: &crate::daemon::Drain| {
        format!(
            "{} rec/s, {:.0} us CPU/record, peak RSS {}",
            int(d.rate),
            d.cpu_us_per_record,
            mib(d.peak_rss_kib)
        )
    };
    t.info(
        "drain of the ODM messages (default)",
        show(&r.odm, |o| drain(&o.odm_drain)),
    );
    t.info(
        "drain of as many JSON records (default)",
        show(&r.odm, |o| drain(&o.json_drain)),
    );
    t.info(
        "drain of half JSON, half ODM (default)",
        show(&r.odm, |o| drain(&o.mixed_drain)),
    );
    t.info(
        "ODM drain rate / JSON drain rate",
        show(&r.odm, |o| {
            format!("{:.2}", o.odm_drain.rate / o.json_drain.rate)
        }),
    );
}
