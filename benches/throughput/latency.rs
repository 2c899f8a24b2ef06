//! Publish-to-commit latency, taken one way for every stage that reports it (fast lane, lone record,
//! sustained): the wall clock read just before a record's `basic.publish`, against the record's
//! `received_at` in `crf_records`.
//!
//! `received_at` is `now()` of the storing transaction: its start, so the figure leaves out the
//! statement and the commit's own WAL flush (about a millisecond on this machine); with group
//! commit or batching it is the start of the transaction that carried the record. The bench and
//! PostgreSQL run on the same machine, so both read the same clock.
//!
//! Also the helper that sends records one at a time, each once the previous one is stored (the
//! fast lane and the lone record).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use lapin::BasicProperties;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::daemon::Daemon;
use crate::world;

/// Microseconds since the Unix epoch, from the system clock (the clock PostgreSQL's `now()` reads).
pub fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Microseconds since the Unix epoch of a PostgreSQL timestamp.
pub fn micros(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_micros()
}

/// Publish-to-commit of each tracked record (its id and send time), in microseconds, in the order
/// given. Fails unless every one is stored.
pub async fn publish_to_commit(
    db: &tokio_postgres::Client,
    sent_at: &[(Uuid, i64)],
) -> Result<Vec<i64>> {
    let ids: Vec<Uuid> = sent_at.iter().map(|(id, _)| *id).collect();
    let rows = db
        .query(
            "SELECT record_id, received_at FROM crf_records WHERE record_id = ANY($1)",
            &[&ids],
        )
        .await?;
    let stored: std::collections::HashMap<Uuid, i64> =
        rows.iter().map(|r| (r.get(0), micros(r.get(1)))).collect();
    let us: Vec<i64> = sent_at
        .iter()
        .filter_map(|(id, sent)| Some(stored.get(id)? - sent))
        .collect();
    if us.is_empty() || us.len() != ids.len() {
        bail!("{} of {} tracked records are stored", us.len(), ids.len());
    }
    Ok(us)
}

/// p50, p90, p99 and max of a set of durations (nearest rank).
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// `None` for no samples.
    pub fn of_micros(us: &[i64]) -> Option<Percentiles> {
        if us.is_empty() {
            return None;
        }
        let mut us = us.to_vec();
        us.sort_unstable();
        let pct = |p: f64| {
            let rank = ((p * us.len() as f64).ceil() as usize).clamp(1, us.len());
            us[rank - 1] as f64 / 1000.0
        };
        Some(Percentiles {
            samples: us.len(),
            p50_ms: pct(0.50),
            p90_ms: pct(0.90),
            p99_ms: pct(0.99),
            max_ms: pct(1.0),
        })
    }
}

/// Publishes each record (id, body) to `queue` on the default exchange, persistent, and waits for
/// the broker's confirm and then for the record to be stored before the next one, with `pause`
/// between. Returns each record's id and send time, for [`publish_to_commit`].
pub async fn one_at_a_time(
    db: &tokio_postgres::Client,
    daemon: &mut Daemon,
    queue: &str,
    records: Vec<(Uuid, String)>,
    pause: Duration,
) -> Result<Vec<(Uuid, i64)>> {
    let conn = world::amqp().await?;
    let result = async {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let mut sent_at = Vec::with_capacity(records.len());
        for (id, body) in records {
            let sent = unix_micros();
            ch.basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(ShortString::from("application/json"))
                    .with_message_id(ShortString::from(Uuid::new_v4().to_string())),
            )
            .await?
            .await?;
            stored(db, daemon, id).await?;
            sent_at.push((id, sent));
            tokio::time::sleep(pause).await;
        }
        Ok(sent_at)
    }
    .await;
    let _ = conn.close(200, ShortString::from("bye")).await;
    result
}

/// Polls every 2 ms until the record is stored (60 s at most).
async fn stored(db: &tokio_postgres::Client, daemon: &mut Daemon, id: Uuid) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = db
            .query_opt("SELECT 1 FROM crf_records WHERE record_id = $1", &[&id])
            .await?;
        if found.is_some() {
            return Ok(());
        }
        daemon.check_alive()?;
        if Instant::now() >= deadline {
            bail!("a record sent on its own was not stored within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
