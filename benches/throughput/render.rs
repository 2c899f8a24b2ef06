//! The table rendered for the terminal (aligned text) and for `results.md` (Markdown with notes on
//! the method), and the sweep's worker counts drawn as an SVG chart (axes, labels, a polyline with
//! points).

use crate::Results;
use crate::report::int;

pub fn met_text(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None => "",
    }
}

/// The met column of every row, `NOT MET (n)` where a reason is given, and those reasons,
/// numbered the same way, for the lines under the table.
fn met_and_reasons(r: &Results) -> (Vec<String>, Vec<String>) {
    let mut reasons = Vec::new();
    let cells = r
        .rows
        .iter()
        .map(|x| match (x.met, &x.why) {
            (Some(false), Some(why)) => {
                reasons.push(format!(
                    "({}) {}, {}: {why}",
                    reasons.len() + 1,
                    x.section,
                    x.measure
                ));
                format!("{} ({})", met_text(x.met), reasons.len())
            }
            _ => met_text(x.met).to_string(),
        })
        .collect();
    (cells, reasons)
}

fn header(r: &Results) -> String {
    format!(
        "edc-ingest throughput benchmark, {} (UTC){}",
        r.started_utc,
        if r.params.quick { ", --quick" } else { "" }
    )
}

/// The table for the terminal: aligned columns.
pub fn text(r: &Results) -> String {
    let head = ["section", "measure", "value", "target", "met"];
    let (met, why) = met_and_reasons(r);
    let cells: Vec<[&str; 5]> = r
        .rows
        .iter()
        .zip(&met)
        .map(|(x, met)| {
            [
                x.section.as_str(),
                &x.measure,
                &x.value,
                &x.target,
                met.as_str(),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[&str; 5]| {
        let parts: Vec<String> = row
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        parts.join(" | ").trim_end().to_string()
    };
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    let mut out = vec![header(r), String::new(), line(&head), rule.join("-+-")];
    let mut last = "";
    for (row, x) in cells.iter().zip(&r.rows) {
        if !last.is_empty() && x.section != last {
            out.push(rule.join("-+-"));
        }
        last = &x.section;
        out.push(line(row));
    }
    if !why.is_empty() {
        out.push(String::new());
        out.push("Why not met:".into());
        out.extend(why);
    }
    out.join("\n")
}

pub fn markdown(r: &Results) -> String {
    let esc = |s: &str| s.replace('|', "\\|");
    let mut out = format!("# {}\n\n", header(r));
    out.push_str("| section | measure | value | target | met |\n|---|---|---|---|---|\n");
    let (met, why) = met_and_reasons(r);
    for (x, met) in r.rows.iter().zip(met) {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            esc(&x.section),
            esc(&x.measure),
            esc(&x.value),
            esc(&x.target),
            met
        ));
    }
    if !why.is_empty() {
        out.push_str("\n## Why not met\n\n");
        for reason in why {
            out.push_str(&format!("- {reason}\n"));
        }
    }
    out.push_str(NOTES);
    out.push_str("\n![sweep](sweep.svg)\n");
    out
}

const NOTES: &str = "
## How it was measured

- Every stage has its own PostgreSQL database (migrated with `edc_ingest::store::migrate`) and its own
  quorum queues, declared with `edc_ingest::broker::declare` exactly as the daemon declares them.
  PostgreSQL runs with its durable defaults.
- Broker ceiling: a bare lapin consumer that only acks, on a backlog preloaded with
  `tools::publish`; timed from `basic.consume` to the last ack. Multiple acks: `multiple=true` every
  prefetch/2 deliveries.
- Database ceiling: the rows the daemon writes (record, audit row, data queries, rejections), with
  column values from `pipeline::prepare`; timed from the first statement to the last commit.
- Plain consumer: `benches/baseline/consumer.py` (aio-pika `connect_robust`, prefetch 16, an asyncpg
  pool of 16; per message one transaction inserting the record and its audit row, then the ack; a
  body it cannot store is rejected without requeue and dead-lettered by the queue). No validation,
  de-identification, events or batch receipts, and no tuning. It drains the same preloaded records
  as the end-to-end stage, timed like the daemon's drain: from its start until it has handled every
  message. Its CPU is its own `process_time()`, start-up included. The end-to-end rows show the
  daemon's drain rate as a multiple of this rate.
- End to end: the release binary, from its start until `count(crf_records) + count(rejections)`
  equals the backlog (polled every 50 ms); CPU time is utime+stime from `/proc/<pid>/stat` just
  before SIGTERM, so it includes start-up. RabbitMQ's and PostgreSQL's CPU is that of the node and
  the cluster the bench uses (its `beam.smp`; the postmaster and its children), the whole machine's
  is the busy time in `/proc/stat`, whoever used it.
- Publish-to-commit (fast lane, lone record, sustained): the record's `received_at` (the storing
  transaction's `now()`, so without the statement and the commit's own flush) minus the wall clock
  read just before its `basic.publish`. The fast lane and the lone record send one record at a time,
  each once the previous one is stored (polled every 2 ms): the fast lane to the urgent queue once 2 %
  of a backlog is done, with 50 ms between records; the lone record to the work queue of a daemon
  with nothing else queued, 250 ms after the previous one was stored.
- Sustained: a step is kept up with when the publisher sent >= 95 % of the rate and fewer than one
  second's worth of messages lacked an outcome at the step's end. Latency is publish-to-commit for
  every valid record sent during the latency run, at half the highest rate kept up with.
- Outbox relay lag: during the whole sustained stage, an exclusive queue bound to the world's events
  exchange (`record.*`, no acks) notes when each record event arrives and subtracts its
  `occurred_at` (the storing transaction's `now()`). So it spans the commit, the relay's next round
  (it polls every 100 ms when idle), the publish and the delivery. Shown for the events of the
  transactions that started during the highest step kept up with, and the maximum over the stage;
  the target counts as met only if every record event arrived.
- Memory: `VmHWM` from `/proc/<pid>/status` just before SIGTERM.
- Context switches: `voluntary_ctxt_switches` plus `nonvoluntary_ctxt_switches` of every thread
  (`/proc/<pid>/task/*/status`) just before SIGTERM, divided by the messages: how often the
  daemon's threads gave up a core, mostly to sleep until the next hand-off woke them.
- The machine is shared: other processes (tests, builds) compete for its two cores, and the bench's
  own publisher and poller run on it too. Compare figures from one run with each other.
";

/// Drain throughput against the worker count, of the sweep's configurations with workers = pool,
/// batch 1 and the default committers: axes, labels, a polyline with points.
pub fn sweep_svg(r: &Results) -> String {
    let line_of: Vec<&crate::endtoend::SweepPoint> = r
        .sweep
        .iter()
        .filter(|p| {
            let c = p.config;
            c.batch_size == 1
                && c.workers == c.pool_size
                && c.committers == crate::daemon::DEFAULT_COMMITTERS
        })
        .collect();
    let points: Vec<(usize, f64)> = line_of
        .iter()
        .filter_map(|p| p.result.ok().map(|d| (p.config.workers, d.rate)))
        .collect();
    let (w, h) = (720.0, 420.0);
    let (left, right, top, bottom) = (80.0, 30.0, 50.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let ymax = nice_ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let all: Vec<usize> = line_of.iter().map(|p| p.config.workers).collect();
    let lo = all.iter().copied().min().unwrap_or(1).max(1) as f64;
    let hi = all.iter().copied().max().unwrap_or(1).max(1) as f64;
    let x = |workers: usize| {
        if hi > lo {
            left + ((workers.max(1) as f64).log2() - lo.log2()) / (hi.log2() - lo.log2()) * pw
        } else {
            left + pw / 2.0
        }
    };
    let y = |rate: f64| top + ph - rate / ymax * ph;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15">edc-ingest drain rate by worker count ({} msgs, pool = workers, batch 1)</text>
"#,
        w / 2.0,
        int(r.params.sweep_messages as f64)
    );
    for i in 0..=5 {
        let v = ymax * f64::from(i) / 5.0;
        let yy = y(v);
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            left + pw,
            left - 8.0,
            yy + 4.0,
            int(v)
        ));
    }
    for &wk in &all {
        let xx = x(wk);
        s.push_str(&format!(
            "<line x1=\"{xx:.1}\" y1=\"{:.1}\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>\n<text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{wk}</text>\n",
            top + ph,
            top + ph + 5.0,
            top + ph + 20.0
        ));
    }
    s.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"#333\"/>\n<line x1=\"{left}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>\n",
        top + ph,
        top + ph,
        left + pw,
        top + ph
    ));
    s.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">workers (log scale)</text>\n<text x=\"18\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {:.1})\">records/s</text>\n",
        left + pw / 2.0,
        h - 15.0,
        top + ph / 2.0,
        top + ph / 2.0
    ));
    let line: Vec<String> = points
        .iter()
        .map(|&(wk, rate)| format!("{:.1},{:.1}", x(wk), y(rate)))
        .collect();
    s.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n",
        line.join(" ")
    ));
    for &(wk, rate) in &points {
        s.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#1f77b4\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\">{}</text>\n",
            x(wk),
            y(rate),
            x(wk),
            y(rate) - 9.0,
            int(rate)
        ));
    }
    for p in line_of.iter().filter(|p| p.result.ok().is_none()) {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#c00\">failed</text>\n",
            x(p.config.workers),
            top + ph - 8.0
        ));
    }
    s.push_str("</svg>\n");
    s
}

/// The smallest 1, 2, 2.5 or 5 x 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * mag)
}
