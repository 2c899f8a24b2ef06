//! `edc-ingest batch status ID`: the receipt of one upload batch, as the coordinator needs it.

use std::fmt::Write;

use uuid::Uuid;

use crate::config::PostgresSettings;
use crate::store;

pub async fn status(pg: &PostgresSettings, id: &str) -> anyhow::Result<String> {
    let batch = Uuid::parse_str(id.trim())
        .map_err(|_| anyhow::anyhow!("`{id}` is not a batch id (a UUID)"))?;
    let client = store::connect(&pg.url, pg).await?;
    let row = client
        .query_opt(
            "SELECT expected, accepted, queried, duplicates, dead_lettered::text, dead_lettered_total,
                    first_seen::text, coalesce(updated_at, first_seen)::text, completed_at::text
             FROM batch_receipts WHERE batch_id = $1",
            &[&batch],
        )
        .await?;
    client.close().await;
    let Some(r) = row else {
        anyhow::bail!("no batch {batch}: none of its records has an outcome yet");
    };
    let expected: Option<i32> = r.get(0);
    let (accepted, queried, duplicates): (i32, i32, i32) = (r.get(1), r.get(2), r.get(3));
    let dead: serde_json::Value = serde_json::from_str(&r.get::<_, String>(4)).unwrap_or_default();
    let dead_total: i32 = r.get(5);
    let completed: Option<String> = r.get(8);
    let done = accepted + queried + duplicates + dead_total;
    let mut out = String::new();
    let state = match (&completed, expected) {
        (Some(at), _) => format!("complete at {at}"),
        (None, Some(n)) => format!("in progress: {done} of {n} messages have their outcome"),
        (None, None) => format!("{done} outcomes so far (the upload did not say the batch size)"),
    };
    writeln!(out, "batch {batch}: {state}")?;
    writeln!(
        out,
        "  expected       {}",
        expected.map_or("-".to_string(), |n| n.to_string())
    )?;
    writeln!(out, "  accepted       {accepted}")?;
    writeln!(out, "  queried        {queried}")?;
    writeln!(out, "  duplicates     {duplicates}")?;
    let kinds: Vec<String> = dead
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    let kinds = if kinds.is_empty() {
        String::new()
    } else {
        format!(" ({})", kinds.join(", "))
    };
    writeln!(out, "  dead-lettered  {dead_total}{kinds}")?;
    writeln!(out, "  first outcome  {}", r.get::<_, String>(6))?;
    write!(out, "  last update    {}", r.get::<_, String>(7))?;
    Ok(out)
}
