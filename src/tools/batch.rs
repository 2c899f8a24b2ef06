//! `edc-ingest batch status ID`: the receipt of one upload batch, as the coordinator needs it, as
//! text or as one JSON document.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::PostgresSettings;
use crate::store;

use super::Format;

/// One batch's receipt. Serialised as is for `--output json` (the README lists the fields).
#[derive(Clone, Debug, Serialize)]
pub struct Receipt {
    pub batch_id: String,
    /// `complete`, `in_progress`, or `size_unknown` (no message of the batch said its size).
    pub state: &'static str,
    pub expected: Option<i32>,
    /// Messages with an outcome: accepted, queried, duplicates and dead-lettered together.
    pub outcomes: i64,
    pub accepted: i32,
    pub queried: i32,
    pub duplicates: i32,
    pub dead_lettered: i32,
    /// Dead-lettered, by kind.
    pub dead_lettered_by_kind: Map<String, Value>,
    pub first_outcome_at: String,
    pub last_update_at: String,
    pub completed_at: Option<String>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads the receipt of batch `id`.
pub async fn receipt(pg: &PostgresSettings, id: &str) -> anyhow::Result<Receipt> {
    let batch = Uuid::parse_str(id.trim()).map_err(|_| {
        anyhow::anyhow!(
            "`{}` is not a batch id (a UUID)",
            crate::printable::printable(id)
        )
    })?;
    let client = store::connect(&pg.url, pg).await?;
    let row = client
        .query_opt(
            "SELECT expected, accepted, queried, duplicates, dead_lettered::text, dead_lettered_total,
                    first_seen, coalesce(updated_at, first_seen), completed_at
             FROM batch_receipts WHERE batch_id = $1",
            &[&batch],
        )
        .await;
    client.close().await;
    let Some(r) = row? else {
        anyhow::bail!("no batch {batch}: none of its records has an outcome yet");
    };
    let expected: Option<i32> = r.get(0);
    let (accepted, queried, duplicates): (i32, i32, i32) = (r.get(1), r.get(2), r.get(3));
    let by_kind = serde_json::from_str::<Value>(&r.get::<_, String>(4))
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let dead_lettered: i32 = r.get(5);
    let completed_at: Option<DateTime<Utc>> = r.get(8);
    let state = match (completed_at, expected) {
        (Some(_), _) => "complete",
        (None, Some(_)) => "in_progress",
        (None, None) => "size_unknown",
    };
    Ok(Receipt {
        batch_id: batch.to_string(),
        state,
        expected,
        outcomes: i64::from(accepted)
            + i64::from(queried)
            + i64::from(duplicates)
            + i64::from(dead_lettered),
        accepted,
        queried,
        duplicates,
        dead_lettered,
        dead_lettered_by_kind: by_kind,
        first_outcome_at: time(r.get(6)),
        last_update_at: time(r.get(7)),
        completed_at: completed_at.map(time),
    })
}

/// The receipt of batch `id`, as text or JSON.
pub async fn status(pg: &PostgresSettings, id: &str, format: Format) -> anyhow::Result<String> {
    let receipt = receipt(pg, id).await?;
    Ok(match format {
        Format::Json => serde_json::to_string(&receipt)?,
        Format::Text => receipt.text(),
    })
}

impl Receipt {
    pub fn text(&self) -> String {
        let state = match (&self.completed_at, self.expected) {
            (Some(at), _) => format!("complete at {at}"),
            (None, Some(n)) => format!(
                "in progress: {} of {n} messages have their outcome",
                self.outcomes
            ),
            (None, None) => format!(
                "{} outcomes so far (the upload did not say the batch size)",
                self.outcomes
            ),
        };
        let kinds: Vec<String> = self
            .dead_lettered_by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let kinds = if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        };
        [
            format!("batch {}: {state}", self.batch_id),
            format!(
                "  expected       {}",
                self.expected.map_or("-".to_string(), |n| n.to_string())
            ),
            format!("  accepted       {}", self.accepted),
            format!("  queried        {}", self.queried),
            format!("  duplicates     {}", self.duplicates),
            format!("  dead-lettered  {}{kinds}", self.dead_lettered),
            format!("  first outcome  {}", self.first_outcome_at),
            format!("  last update    {}", self.last_update_at),
        ]
        .join("\n")
    }
}
