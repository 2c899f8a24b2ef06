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

#[tokio::test]
async fn horizons_under_one_day_are_refused_by_the_command_the_settings_and_the_database() {
    let env = TestEnv::new().await;
    env.db()
        .await
        .batch_execute(
            "INSERT INTO duplicates_seen (message_id, record_id, version, seen_at) VALUES
               ('an hour ago', gen_random_uuid(), 1, now() - interval '1 hour');
             INSERT INTO outbox_parked (reason, event, parked_at) VALUES
               ('refused', '{}', now() - interval '1 hour')",
        )
        .await
        .unwrap();

    // The command line and the settings: exit 2, saying why, before anything is removed.
    for (vars, args) in [
        (vec![], vec!["prune", "--older-than", "23h"]),
        (vec![], vec!["prune", "--older-than", "1ms"]),
        (
            vec![],
            vec![
                "prune",
                "--older-than",
                "30days",
                "--parked-older-than",
                "1h",
            ],
        ),
        (
            vec![("EDC__RETENTION__WORKING_TABLES", "12h")],
            vec!["prune"],
        ),
        (vec![("EDC__RETENTION__OUTBOX_PARKED", "1h")], vec!["prune"]),
    ] {
        let out = edc(&env, &vars, &args);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(2), "{vars:?} {args:?}: {said}");
        assert!(said.contains("at least one day"), "{said}");
    }
    // The daemon's settings too.
    let out = edc(&env, &[("EDC__RETENTION__WORKING_TABLES", "1h")], &["run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("retention.working_tables"));

    // The database's own function, whoever calls it.
    let db = env.db().await;
    for sql in [
        "SELECT * FROM prune_working_tables(3600, NULL)",
        "SELECT * FROM prune_working_tables(NULL, 0)",
        "SELECT * FROM prune_working_tables(0.001)",
    ] {
        let e = db.batch_execute(sql).await.expect_err(sql);
        let code = e.as_db_error().map(|d| d.code().code().to_string());
        assert_eq!(code.as_deref(), Some("22023"), "{sql}: {e}");
    }
    assert_eq!(env.count("SELECT count(*) FROM duplicates_seen").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM outbox_parked").await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn parked_events_are_kept_by_default_and_pruned_past_their_own_horizon() {
    // Arrange: events the broker refused 100 days ago and today.
    let env = TestEnv::new().await;
    env.db()
        .await
        .batch_execute(
            "INSERT INTO outbox_parked (reason, event, parked_at) VALUES
               ('refused', '{\"event_id\": \"old\"}', now() - interval '100 days'),
               ('refused', '{\"event_id\": \"new\"}', now())",
        )
        .await
        .unwrap();
    let parked = "SELECT count(*) FROM outbox_parked";

    // The working tables' horizon leaves them alone.
    let out = edc(&env, &[], &["prune", "--older-than", "1day"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("outbox_parked"), "{}", text(&out));
    assert_eq!(env.count(parked).await, 2);

    // Their own horizon removes the old one only.
    let out = edc(&env, &[], &["prune", "--parked-older-than", "90days"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("outbox_parked older than 90days: outbox_parked 1 rows"),
        "{said}"
    );
    assert!(!said.contains("duplicates_seen"), "{said}");
    assert_eq!(
        env.count("SELECT count(*) FROM outbox_parked WHERE event ->> 'event_id' = 'new'")
            .await,
        1
    );
    assert_eq!(env.count(parked).await, 1);

    // retention.outbox_parked: the daemon prunes at start (then every hour).
    env.db()
        .await
        .batch_execute("UPDATE outbox_parked SET parked_at = now() - interval '3 days'")
        .await
        .unwrap();
    let daemon = Daemon::start(env.settings(&[("EDC__RETENTION__OUTBOX_PARKED", "2days")]));
    wait_for("the daemon pruned the parked event", WAIT, || async {
        env.count(parked).await == 0
    })
    .await;
    daemon.stop().await;
    env.cleanup().await;
}
