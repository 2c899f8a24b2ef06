//! What becomes of each message: every outcome of the contract, on the real broker and database.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

mod every;

use every::every_outcome;

#[tokio::test]
async fn every_outcome_is_stored_or_dead_lettered_with_its_kind() {
    every_outcome(1).await;
}

/// The same messages, all waiting before the daemon starts, so that they are taken as one batch:
/// the original, its redelivery and its conflicting twin sit in the same batch.
#[tokio::test]
async fn every_outcome_is_the_same_when_records_are_committed_in_batches() {
    every_outcome(16).await;
}

#[tokio::test]
async fn a_record_whose_commit_fails_is_not_acked_and_is_stored_once_the_database_is_back() {
    // Arrange: every insert into crf_records fails with a transient error while the switch is on.
    let env = TestEnv::new().await;
    let daemon = Daemon::start(env.settings(&[("EDC__JOB_TIMEOUT", "1s"), ("EDC__WORKERS", "1")]));
    let db = env.db().await;
    db.batch_execute(
        "CREATE TABLE fail_switch (on_ boolean);
         INSERT INTO fail_switch VALUES (true);
         CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF (SELECT on_ FROM fail_switch) THEN
             RAISE EXCEPTION 'simulated outage' USING ERRCODE = '57P03';
           END IF;
           RETURN NEW;
         END $$;
         CREATE TRIGGER fail_insert BEFORE INSERT ON crf_records FOR EACH ROW EXECUTE FUNCTION fail_insert();",
    )
    .await
    .unwrap();
    let rec = record(vs_items());

    // Act
    env.publish(&[("m1", bytes(&rec))]).await;
    let stats = daemon.stats.clone();
    wait_for("the message to be postponed twice", WAIT, || {
        let s = stats.summary();
        async move { s.postponed >= 2 }
    })
    .await;

    // Assert: nothing stored, nothing dead-lettered, the message still in the queue
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 0);
    assert_eq!(daemon.stats.summary().dead_lettered_total(), 0);
    assert_eq!(daemon.stats.summary().settled(), 0);
    // Act: stop; the message must be back in the queue, neither acked nor lost
    daemon.stop().await;
    wait_for("the message back in the queue", WAIT, || async {
        env.ready(&env.queue).await == 1
    })
    .await;

    // Act: the database recovers
    db.batch_execute("UPDATE fail_switch SET on_ = false")
        .await
        .unwrap();
    let daemon = Daemon::start(env.settings(&[("EDC__WORKERS", "1")]));
    daemon.wait_settled(1, WAIT).await;
    let summary = daemon.stop().await;

    // Assert: stored exactly once, acked, nothing dead-lettered
    assert_eq!(summary.accepted, 1, "{summary}");
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM audit_trail").await, 1);
    assert!(env.drain_dlq().await.is_empty());
    wait_for("the work queue to be empty", WAIT, || async {
        env.ready(&env.queue).await == 0
    })
    .await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_panicking_job_is_dead_lettered_and_its_worker_goes_on() {
    // Arrange: one worker, so the record after the panic is handled by the same worker.
    let env = TestEnv::new().await;
    let daemon = Daemon::start(env.settings(&[("EDC__WORKERS", "1")]));
    let mut boom = record(vs_items());
    boom["entered_by"] = json!(edc_ingest::fault::PANIC_MARKER);
    let after = record(vs_items());

    // Act
    env.publish(&[("boom", bytes(&boom)), ("after", bytes(&after))])
        .await;
    daemon.wait_settled(2, WAIT).await;
    let summary = daemon.stop().await;

    // Assert
    assert_eq!(summary.accepted, 1, "{summary}");
    assert_eq!(
        summary.dead_lettered_of(edc_ingest::pipeline::RejectKind::Panic),
        1,
        "{summary}"
    );
    let dead = env.drain_dlq().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header(&dead[0], "x-edc-error-kind").as_deref(),
        Some("panic")
    );
    assert_eq!(
        header(&dead[0], "x-edc-error").as_deref(),
        Some("job panicked: fault injection: a deliberate panic")
    );
    assert_eq!(
        env.count("SELECT count(*) FROM rejections WHERE kind = 'panic'")
            .await,
        1
    );
    env.cleanup().await;
}

#[tokio::test]
async fn an_older_version_arriving_late_never_hides_the_newer_one() {
    let env = TestEnv::new().await;
    let daemon = Daemon::start(env.settings(&[]));
    let mut v2 = record(vs_items());
    v2["version"] = json!(2);
    v2["items"]["PULSE"] = json!(88);
    let mut v1 = v2.clone();
    v1["version"] = json!(1);
    v1["items"]["PULSE"] = json!(60);

    env.publish(&[("v2", bytes(&v2))]).await;
    daemon.wait_settled(1, WAIT).await;
    env.publish(&[("v1", bytes(&v1))]).await;
    daemon.wait_settled(2, WAIT).await;
    daemon.stop().await;

    let row = env
        .db()
        .await
        .query_one("SELECT version, items->>'PULSE' FROM crf_current", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, String>(1)),
        (2, "88".to_string())
    );
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 2);
    env.cleanup().await;
}

#[tokio::test]
async fn the_audit_trail_refuses_updates_and_deletes() {
    let env = TestEnv::new().await;
    let daemon = Daemon::start(env.settings(&[]));
    env.publish(&[("a", bytes(&record(vs_items())))]).await;
    daemon.wait_settled(1, WAIT).await;
    daemon.stop().await;

    let db = env.db().await;
    for sql in [
        "UPDATE audit_trail SET actor = 'someone-else'",
        "DELETE FROM audit_trail",
        "TRUNCATE audit_trail",
    ] {
        let err = db.batch_execute(sql).await.expect_err(sql);
        assert!(format!("{err:?}").contains("append-only"), "{sql}: {err:?}");
    }
    assert_eq!(env.count("SELECT count(*) FROM audit_trail").await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn an_unexplained_error_is_retried_through_the_delay_queue_then_stored() {
    // Arrange: the first two attempts fail with SQLSTATE XX000 (an internal error: neither the
    // record's fault nor an outage). A sequence counts them: nextval survives the rollback.
    let env = TestEnv::new().await;
    env.db()
        .await
        .batch_execute(
            "CREATE SEQUENCE attempts;
             CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF nextval('attempts') <= 2 THEN
                 RAISE EXCEPTION 'simulated internal error' USING ERRCODE = 'XX000';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER fail_insert BEFORE INSERT ON crf_records FOR EACH ROW EXECUTE FUNCTION fail_insert();",
        )
        .await
        .unwrap();
    let daemon = Daemon::start(env.settings(&[("EDC__RETRY__INITIAL_DELAY", "100ms")]));

    // Act
    env.publish(&[("r1", bytes(&record(vs_items())))]).await;
    daemon.wait_settled(1, WAIT).await;
    let summary = daemon.stop().await;

    // Assert: two trips through the delay queues, then stored once; nothing dead-lettered
    assert_eq!((summary.retried, summary.accepted), (2, 1), "{summary}");
    assert_eq!(summary.dead_lettered_total(), 0, "{summary}");
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM audit_trail").await, 1);
    env.cleanup().await;
}

#[tokio::test]
async fn an_error_that_never_passes_is_dead_lettered_as_failed_after_the_last_attempt() {
    let env = TestEnv::new().await;
    env.db()
        .await
        .batch_execute(
            "CREATE FUNCTION fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'simulated internal error' USING ERRCODE = 'XX000'; END $$;
             CREATE TRIGGER fail_insert BEFORE INSERT ON crf_records FOR EACH ROW EXECUTE FUNCTION fail_insert();",
        )
        .await
        .unwrap();
    let daemon = Daemon::start(env.settings(&[
        ("EDC__RETRY__INITIAL_DELAY", "50ms"),
        ("EDC__RETRY__MAX_ATTEMPTS", "3"),
    ]));

    env.publish(&[("r1", bytes(&record(vs_items())))]).await;
    daemon.wait_settled(1, WAIT).await;
    let summary = daemon.stop().await;

    assert_eq!(summary.retried, 2, "{summary}");
    assert_eq!(
        summary.dead_lettered_of(edc_ingest::pipeline::RejectKind::Failed),
        1,
        "{summary}"
    );
    let dead = env.drain_dlq().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header(&dead[0], "x-edc-attempts").as_deref(),
        Some("LongLongInt(3)")
    );
    assert!(
        header(&dead[0], "x-edc-error")
            .unwrap()
            .contains("gave up after 3 attempts")
    );
    let attempts: i32 = env
        .db()
        .await
        .query_one("SELECT attempts FROM rejections WHERE kind = 'failed'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 3);
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn one_bad_record_fails_alone_and_its_batch_is_stored() {
    // Arrange: the database refuses one record (a data exception) in the middle of a batch of 40.
    let env = TestEnv::new().await;
    env.db()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.subject = 'DEMO-001-03-0666' THEN
                 RAISE EXCEPTION 'refused' USING ERRCODE = '22023';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_one BEFORE INSERT ON crf_records FOR EACH ROW EXECUTE FUNCTION refuse_one();",
        )
        .await
        .unwrap();
    let mut records: Vec<serde_json::Value> = (0..40).map(|_| record(vs_items())).collect();
    records[17]["subject"] = json!("DEMO-001-03-0666");
    let bodies: Vec<(String, Vec<u8>)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("m{i}"), bytes(r)))
        .collect();
    env.publish(&bodies).await;

    // Act: one worker taking up to 64 at once
    let daemon = Daemon::start(env.settings(&[("EDC__WORKERS", "1"), ("EDC__BATCH_SIZE", "64")]));
    daemon.wait_settled(40, WAIT).await;
    let summary = daemon.stop().await;

    // Assert
    assert_eq!(summary.accepted, 39, "{summary}");
    assert!(
        summary.group_splits >= 1,
        "the failing batch was split: {summary:?}"
    );
    assert_eq!(
        summary.dead_lettered_of(edc_ingest::pipeline::RejectKind::Failed),
        1,
        "{summary}"
    );
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 39);
    assert_eq!(env.count("SELECT count(*) FROM audit_trail").await, 39);
    let dead = env.drain_dlq().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].delivery.data, bytes(&records[17]));
    assert!(
        header(&dead[0], "x-edc-error")
            .unwrap()
            .contains("SQLSTATE 22023")
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_batch_is_prefetched_workers_times_batch_size() {
    let env = TestEnv::new().await;
    let daemon = Daemon::start(env.settings(&[
        ("EDC__WORKERS", "3"),
        ("EDC__POSTGRES__POOL_SIZE", "3"),
        ("EDC__BATCH_SIZE", "10"),
    ]));
    // 3 workers x 10: 29 on the normal lane, 1 on the urgent lane.
    for (queue, prefetch) in [(env.queue.clone(), 29), (env.urgent_queue(), 1)] {
        wait_for(
            &format!("a consumer of {queue} with prefetch {prefetch}"),
            WAIT,
            || {
                let queue = queue.clone();
                async move {
                    management("/api/consumers").as_array().is_some_and(|a| {
                        a.iter().any(|c| {
                            c["queue"]["name"] == queue.as_str() && c["prefetch_count"] == prefetch
                        })
                    })
                }
            },
        )
        .await;
    }
    daemon.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn every_record_says_which_key_made_its_pseudonyms() {
    let env = TestEnv::new().await;
    env.publish(&[("k1", bytes(&record(vs_items())))]).await;
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(1, WAIT).await;
    daemon.stop().await;

    let key_id: String = env
        .db()
        .await
        .query_one("SELECT pseudonym_key_id FROM crf_records", &[])
        .await
        .unwrap()
        .get(0);
    let dev = edc_ingest::pipeline::Pseudonymizer::insecure_dev();
    assert_eq!(key_id, dev.key_id(), "the id of the key in use");
    env.cleanup().await;
}
