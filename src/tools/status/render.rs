//! `status` as text: the one screen an operator reads (the JSON is the report itself).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{KindCount, QueueDepth, Rates, Report};

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
