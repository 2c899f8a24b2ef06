//! Retention: dead letters kept no longer than `amqp.dead_letter_ttl`, and the working tables pruned
//! without touching a receipt or the evidence.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::ShortString;
use serde_json::json;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn prune_folds_old_batch_counters_keeps_every_receipt_and_forgets_old_working_rows() {
    // Arrange: a batch completed 40 days ago, counted by three connections; one completed today;
    // re-upload ids and crash counts, old and new.
    let env = TestEnv::new().await;
    let db = env.db().await;
    db.batch_execute(
        "INSERT INTO batches (batch_id, expected, first_seen, completed_at) VALUES
           ('00000000-0000-4000-8000-000000000001', 6, now() - interval '41 days', now() - interval '40 days'),
           ('00000000-0000-4000-8000-000000000002', 2, now(), now());
         INSERT INTO batch_counts (batch_id, shard, accepted, queried, duplicates, dead_lettered, dead_lettered_total) VALUES
           ('00000000-0000-4000-8000-000000000001', 101, 2, 0, 0, '{}', 0),
           ('00000000-0000-4000-8000-000000000001', 102, 1, 1, 0, '{\"invalid\": 1}', 1),
           ('00000000-0000-4000-8000-000000000001', 103, 0, 0, 0, '{\"invalid\": 1}', 1),
           ('00000000-0000-4000-8000-000000000002', 101, 1, 0, 0, '{}', 0),
           ('00000000-0000-4000-8000-000000000002', 102, 1, 0, 0, '{}', 0);
         INSERT INTO duplicates_seen (message_id, record_id, version, seen_at) VALUES
           ('old', gen_random_uuid(), 1, now() - interval '40 days'),
           ('new', gen_random_uuid(), 1, now());
         INSERT INTO delivery_ledger (message_key, starts, last_seen) VALUES
           ('old', 1, now() - interval '40 days'), ('new', 1, now());",
    )
    .await
    .unwrap();
    let receipts = "SELECT batch_id::text, expected, accepted, queried, duplicates,
                           dead_lettered::text, dead_lettered_total
                    FROM batch_receipts ORDER BY batch_id";
    let before: Vec<String> = db
        .query(receipts, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();

    // Act
    let out = edc(&env, &[], &["prune", "--older-than", "30days"]);

    // Assert
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("duplicates_seen 1 rows")
            && said.contains("batch_counts 2 rows folded")
            && said.contains("delivery_ledger 1 rows"),
        "{said}"
    );
    let after: Vec<String> = db
        .query(receipts, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    assert_eq!(before, after, "every receipt reads as before");
    let count = |sql: &'static str| async { env.count(sql).await };
    assert_eq!(
        count("SELECT count(*) FROM batch_counts WHERE batch_id = '00000000-0000-4000-8000-000000000001'").await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM batch_counts WHERE batch_id = '00000000-0000-4000-8000-000000000002'").await,
        2,
        "a recent batch keeps its rows"
    );
    assert_eq!(
        count("SELECT count(*) FROM duplicates_seen WHERE message_id = 'new'").await,
        1
    );
    assert_eq!(count("SELECT count(*) FROM duplicates_seen").await, 1);
    assert_eq!(count("SELECT count(*) FROM delivery_ledger").await, 1);

    // Without a horizon, prune refuses to guess.
    let refused = edc(&env, &[], &["prune"]);
    assert_eq!(refused.status.code(), Some(2));
    env.cleanup().await;
}

#[tokio::test]
async fn a_dead_letter_is_kept_for_dead_letter_ttl_and_an_uploaders_expiration_is_ignored() {
    let env = TestEnv::new().await;
    let mut bad = record(vs_items());
    bad["visit"] = json!("WEEK99");

    // With dead_letter_ttl, the dead letter is dropped by the broker once it has passed.
    env.publish(&[("expires", bytes(&bad))]).await;
    let daemon = Daemon::start(env.settings(&[("EDC__AMQP__DEAD_LETTER_TTL", "2s")]));
    daemon.wait_settled(1, WAIT).await;
    daemon.stop().await;
    wait_for("the dead letter to be dropped", WAIT, || async {
        env.ready(&env.dlq).await == 0
    })
    .await;
    assert_eq!(env.count("SELECT count(*) FROM rejections").await, 1);

    // Without it, a dead letter stays, whatever expiration its uploader set on the original.
    let mut again = bad.clone();
    again["record_id"] = json!(uuid::Uuid::new_v4().to_string());
    let props = BasicProperties::default()
        .with_message_id(ShortString::from("short-lived"))
        .with_expiration(ShortString::from("3000"));
    env.publish_with(&bytes(&again), props).await;
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(1, WAIT).await;
    daemon.stop().await;
    // The uploader's 3 s are over by twice; the dead letter must still be there.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(env.ready(&env.dlq).await, 1);
    env.cleanup().await;
}
