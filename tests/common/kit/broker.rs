//! Cleaning up after a world (a test's or a measurement's own queues and exchanges): the queues the
//! daemon declares for its settings, the queues the broker lists under the world's mark, deleted
//! with a bound on each delete.

use std::io::{Read, Write};
use std::time::Duration;

use edc_ingest::config::Settings;
use lapin::options::QueueDeleteOptions;
use lapin::types::ShortString;

/// How long one delete may take (a quorum queue's delete waits for its replicas).
const DELETE_BOUND: Duration = Duration::from_secs(60);

/// Every queue the daemon declares with these settings: the work queue and the urgent lane, the
/// delay queues of each, and the dead-letter queue.
pub fn daemon_queues(settings: &Settings) -> Vec<String> {
    let amqp = &settings.amqp;
    let mut names = Vec::new();
    for lane in [&amqp.queue, &amqp.urgent_queue] {
        names.push(lane.clone());
        names.extend(edc_ingest::broker::topology::retry_queues(
            lane,
            &settings.retry,
        ));
    }
    names.push(amqp.dead_letter_queue.clone());
    names
}

/// The exchanges the daemon declares with these settings (the default exchange aside).
pub fn daemon_exchanges(settings: &Settings) -> Vec<String> {
    vec![
        settings.amqp.dead_letter_exchange.clone(),
        settings.amqp.events_exchange.clone(),
    ]
}

/// A request to RabbitMQ's management API (guest/guest on loopback, port
/// `EDC_TEST_MANAGEMENT_PORT`) with an optional JSON body: the status line and the body; an error
/// if it does not answer within 10 s.
pub fn management_request(
    method: &str,
    path: &str,
    json: Option<&serde_json::Value>,
) -> Result<(String, String), String> {
    let port = std::env::var("EDC_TEST_MANAGEMENT_PORT").unwrap_or_else(|_| "15672".into());
    let fail = |e: std::io::Error| format!("RabbitMQ management API on port {port}: {e}");
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).map_err(fail)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(fail)?;
    let body = json.map(|j| j.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(fail)?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(fail)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

/// GET on RabbitMQ's management API, parsed as JSON; None on any error, or after 10 s without an
/// answer.
pub fn management(path: &str) -> Option<serde_json::Value> {
    let (_, body) = management_request("GET", path, None).ok()?;
    serde_json::from_str(&body).ok()
}

/// Every queue of the default virtual host, as (name, its arguments), from the management API;
/// empty if it does not answer.
pub fn listed_queues() -> Vec<(String, serde_json::Value)> {
    management("/api/queues/%2f?columns=name,arguments")
        .as_ref()
        .and_then(|all| all.as_array())
        .into_iter()
        .flatten()
        .filter_map(|q| Some((q["name"].as_str()?.to_string(), q["arguments"].clone())))
        .collect()
}

/// The listed queues whose names contain `mark` (a world's unique suffix).
pub fn queues_marked(mark: &str) -> Vec<String> {
    listed_queues()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.contains(mark))
        .collect()
}

/// Deletes these queues, then these exchanges, over `conn` (each at most once, each within a
/// bound). Every delete is tried, on a fresh channel after a failure (which closes the channel);
/// the first failure is returned.
pub async fn delete(
    conn: &lapin::Connection,
    queues: &[String],
    exchanges: &[String],
) -> Result<(), String> {
    let mut queues = queues.to_vec();
    queues.sort();
    queues.dedup();
    let mut first: Option<String> = None;
    let mut channel: Option<lapin::Channel> = None;
    for (i, name) in queues.iter().chain(exchanges).enumerate() {
        let ch = match &channel {
            Some(ch) if ch.status().connected() => ch,
            _ => match conn.create_channel().await {
                Ok(ch) => channel.insert(ch),
                Err(e) => return Err(first.unwrap_or(format!("a channel to delete {name}: {e}"))),
            },
        };
        let deleted = if i < queues.len() {
            let op = ch.queue_delete(
                ShortString::from(name.as_str()),
                QueueDeleteOptions::default(),
            );
            tokio::time::timeout(DELETE_BOUND, async { op.await.map(drop) }).await
        } else {
            let op = ch.exchange_delete(ShortString::from(name.as_str()), Default::default());
            tokio::time::timeout(DELETE_BOUND, op).await
        };
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first.get_or_insert(format!("deleting {name}: {e}"));
            }
            Err(_) => {
                first.get_or_insert(format!(
                    "deleting {name}: no answer within {DELETE_BOUND:?}"
                ));
            }
        }
    }
    first.map_or(Ok(()), Err)
}
