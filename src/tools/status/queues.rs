//! The broker's part of `status`: the ready messages and consumers of the work queue, the fast
//! lane, their delay queues and the dead-letter queue, read by passive declares (nothing is created,
//! no management API is needed) at the start and after the window; and the verdict on the backlog.

use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use serde::Serialize;

use crate::broker::{self, topology};
use crate::config::Settings;
use crate::printable::printable;

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

pub(super) async fn broker_part(
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

pub(super) fn backlog(broker: &BrokerPart, window: Duration) -> Backlog {
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

#[cfg(test)]
mod tests {
    use super::*;

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
