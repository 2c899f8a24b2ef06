//! The crash count: how many times a redelivered message was started by a process that then died
//! before settling it. Written in its own transaction before the job runs, so it survives the crash
//! it counts (table `delivery_ledger`). See `worker::job` for how it is used.

use super::PersistError;

/// A message's identity in the crash count: its body's hash and its message id.
pub fn key(body_sha256: &str, message_id: Option<&str>) -> String {
    format!("{body_sha256}:{}", message_id.unwrap_or(""))
}

/// Counts a start of a message that was delivered before. Only a start by another process instance
/// than the previous one counts: the previous instance died (or lost the message) mid-job. A message
/// this same process gave back (an outage, a lost channel) does not count against it. Returns the
/// count. The row is committed before the job runs, so it survives a crash of this process.
pub async fn count_start(
    client: &deadpool_postgres::Client,
    key: &str,
    consumer: &str,
) -> Result<i32, PersistError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO delivery_ledger (message_key, starts, last_consumer) VALUES ($1, 1, $2)
             ON CONFLICT (message_key) DO UPDATE
                SET starts = delivery_ledger.starts
                        + CASE WHEN delivery_ledger.last_consumer = $2 THEN 0 ELSE 1 END,
                    last_seen = now(), last_consumer = $2
             RETURNING starts",
        )
        .await?;
    Ok(client.query_one(&stmt, &[&key, &consumer]).await?.get(0))
}

/// Forgets a message's starts once it is settled.
pub async fn forget(client: &deadpool_postgres::Client, key: &str) -> Result<(), PersistError> {
    let stmt = client
        .prepare_cached("DELETE FROM delivery_ledger WHERE message_key = $1")
        .await?;
    client.execute(&stmt, &[&key]).await?;
    Ok(())
}
