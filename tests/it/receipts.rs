//! Batch receipts complete whatever the first outcome was: a record that fails for good, a job that
//! panics, a message that crashed the process (poison).

use std::time::Duration;

use lapin::options::BasicGetOptions;
use lapin::types::ShortString;
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// A record of upload batch `batch` (of `size` records).
fn in_batch(batch: &str, size: u32, items: Value) -> Value {
    let mut r = record(items);
    r["batch"] = json!({"id": batch, "size": size});
    r
}

/// The receipt of `batch` once it is complete: (expected, accepted, dead_lettered by kind).
async fn completed(env: &TestEnv, batch: &str) -> (i32, i32, Value) {
    let id = uuid::Uuid::parse_str(batch).unwrap();
    wait_for("the batch to complete", WAIT, || async {
        env.db()
            .await
            .query_opt(
                "SELECT 1 FROM batches WHERE batch_id = $1 AND completed_at IS NOT NULL",
                &[&id],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let row = env
        .db()
        .await
        .query_one(
            "SELECT expected, accepted, dead_lettered::text FROM batch_receipts WHERE batch_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let dead: String = row.get(2);
    (row.get(0), row.get(1), serde_json::from_str(&dead).unwrap())
}

fn new_batch() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test]
async fn a_batch_whose_first_record_fails_for_good_still_completes() {
    // Arrange: a record with SYSBP 199 fails with an unexplained error, and there is one attempt.
    let env = TestEnv::new().await;
    env.db()
        .await
        .batch_execute(
            "CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.items->>'SYSBP' = '199' THEN
                 RAISE EXCEPTION 'simulated internal error' USING ERRCODE = 'XX000';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER fail_insert BEFORE INSERT ON crf_records FOR EACH ROW EXECUTE FUNCTION fail_insert();",
        )
        .await
        .unwrap();
    let batch = new_batch();
    let mut failing = vs_items();
    failing["SYSBP"] = json!(199);
    let daemon = Daemon::start(env.settings(&[("EDC__RETRY__MAX_ATTEMPTS", "1")]));

    // Act: the failing record is the batch's first outcome; the other two come after it.
    env.publish(&[("first", bytes(&in_batch(&batch, 3, failing)))])
        .await;
    daemon.wait_settled(1, WAIT).await;
    let rest: Vec<(&str, Vec<u8>)> = ["second", "third"]
        .into_iter()
        .map(|id| (id, bytes(&in_batch(&batch, 3, vs_items()))))
        .collect();
    env.publish(&rest).await;

    // Assert
    let (expected, accepted, dead) = completed(&env, &batch).await;
    daemon.stop().await;
    assert_eq!((expected, accepted), (3, 2));
    assert_eq!(dead, json!({"failed": 1}));
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_that_panics_counts_on_its_batch_receipt() {
    let env = TestEnv::new().await;
    let batch = new_batch();
    let mut boom = in_batch(&batch, 2, vs_items());
    boom["entered_by"] = json!(edc_ingest::fault::PANIC_MARKER);
    env.publish(&[
        ("boom", bytes(&boom)),
        ("fine", bytes(&in_batch(&batch, 2, vs_items()))),
    ])
    .await;

    let daemon = Daemon::start(env.settings(&[]));
    let (expected, accepted, dead) = completed(&env, &batch).await;
    daemon.stop().await;

    assert_eq!((expected, accepted), (2, 1));
    assert_eq!(dead, json!({"panic": 1}));
    env.cleanup().await;
}

#[tokio::test]
async fn a_message_dead_lettered_as_poison_counts_on_its_batch_receipt() {
    // Arrange: a consumer takes the first message and goes away without acking it, as a process
    // that crashed would; with crash_limit 1 its next start makes it poison.
    let env = TestEnv::new().await;
    let batch = new_batch();
    env.publish(&[
        ("crashed-once", bytes(&in_batch(&batch, 2, vs_items()))),
        ("fine", bytes(&in_batch(&batch, 2, vs_items()))),
    ])
    .await;
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let taken = ch
        .basic_get(
            ShortString::from(env.queue.as_str()),
            BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .expect("the first message");
    assert_eq!(
        taken
            .delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str(),
        "crashed-once"
    );
    conn.close(200, ShortString::from("gone")).await.unwrap();

    // Act
    let daemon = Daemon::start(env.settings(&[("EDC__CRASH_LIMIT", "1")]));
    let (expected, accepted, dead) = completed(&env, &batch).await;
    let summary = daemon.stop().await;

    // Assert
    assert_eq!((expected, accepted), (2, 1), "{summary}");
    assert_eq!(dead, json!({"poison": 1}));
    env.cleanup().await;
}
