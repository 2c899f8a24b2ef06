//! Least privilege: the daemon runs as `edc_app`, a member of the runtime role `edc_runtime`
//! (`scripts/services.sh` creates both), while `edc` owns the schema and migrates. The runtime
//! role can do all the daemon's and the tools' work, and cannot change or remove the evidence nor
//! the triggers that guard it.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

/// This test's database, as the runtime role.
fn runtime_url(env: &TestEnv) -> String {
    let base = pg_runtime_url();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{}", env.db_name)
}

async fn runtime_db(env: &TestEnv) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&runtime_url(env), NoTls)
        .await
        .expect("the runtime role logs in (scripts/services.sh creates edc_app)");
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn the_runtime_role_cannot_change_or_remove_evidence_nor_its_triggers() {
    // Arrange: a stored record with its audit row, written as the owner.
    let env = TestEnv::new().await;
    let owner = env.db().await;
    owner
        .batch_execute(
            "INSERT INTO crf_records (record_id, version, study, site, subject, visit, form, items,
                 status, protocol_version, captured_at, entered_by, payload_sha256)
             VALUES ('8a0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d', 1, 'DEMO-001', 'SITE-03', 'S', 'WEEK4',
                     'VS', '{}', 'accepted', '2.1', now(), 'crc-17', 'x');
             INSERT INTO audit_trail (record_id, version, action, actor, payload_sha256)
             VALUES ('8a0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d', 1, 'created', 'crc-17', 'x');",
        )
        .await
        .unwrap();
    let runtime = runtime_db(&env).await;
    let me: String = runtime
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(me, "edc_app");

    // Act and assert: each is refused by the privilege system itself (SQLSTATE 42501, "permission
    // denied" or "must be owner"), not by the audit trail's triggers.
    for sql in [
        "UPDATE audit_trail SET actor = 'someone else'",
        "DELETE FROM audit_trail",
        "TRUNCATE audit_trail",
        "INSERT INTO audit_trail (record_id, version, action, actor, payload_sha256)
         VALUES (gen_random_uuid(), 1, 'created', 'forged', 'x')",
        "UPDATE crf_records SET status = 'queried'",
        "DELETE FROM crf_records",
        "TRUNCATE crf_records",
        "TRUNCATE crf_records CASCADE",
        "INSERT INTO crf_records (record_id, version, study, site, subject, visit, form, items,
             status, protocol_version, captured_at, entered_by, payload_sha256)
         VALUES (gen_random_uuid(), 1, 'S', 'S', 'S', 'V', 'F', '{}', 'accepted', '1', now(), 'x', 'x')",
        "ALTER TABLE audit_trail DISABLE TRIGGER audit_trail_no_update_delete",
        "ALTER TABLE audit_trail DISABLE TRIGGER ALL",
        "DROP TRIGGER audit_trail_no_update_delete ON audit_trail",
        "DROP TRIGGER audit_trail_no_truncate ON audit_trail",
        "CREATE OR REPLACE FUNCTION audit_trail_refuse_change() RETURNS trigger
         LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        "DROP TABLE audit_trail",
        "ALTER TABLE crf_records OWNER TO edc_app",
        "DELETE FROM rejections",
        "DELETE FROM data_queries",
        "DELETE FROM batch_counts",
        "UPDATE batches SET completed_at = NULL",
        "TRUNCATE delivery_ledger",
        "TRUNCATE outbox",
        "SELECT edc_grant_runtime('edc_app')",
        "SELECT * FROM audit_trail",
    ] {
        let e = runtime
            .batch_execute(sql)
            .await
            .expect_err(&format!("the runtime role may not: {sql}"));
        let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e}"));
        assert_eq!(db.code().code(), "42501", "{sql}: {}", db.message());
        assert!(
            db.message().starts_with("permission denied") || db.message().starts_with("must be owner"),
            "{sql}: {}",
            db.message()
        );
    }
    // Nothing changed; the triggers are still there and enabled.
    assert_eq!(env.count("SELECT count(*) FROM audit_trail").await, 1);
    assert_eq!(
        env.count("SELECT count(*) FROM crf_records WHERE status = 'accepted'")
            .await,
        1
    );
    assert_eq!(
        env.count(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'audit_trail'::regclass
               AND NOT tgisinternal AND tgenabled = 'O'"
        )
        .await,
        2
    );
    // What it may do: read the records, run the functions that write them.
    runtime
        .batch_execute("SELECT count(*) FROM crf_records; SELECT complete_batches()")
        .await
        .unwrap();
    // It owns nothing.
    assert_eq!(
        env.count(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner
             WHERE r.rolname IN ('edc_app', 'edc_runtime')"
        )
        .await,
        0
    );
    env.cleanup().await;
}

#[tokio::test]
async fn the_daemon_does_all_its_work_as_the_runtime_role() {
    // Arrange: the daemon as edc_app, migrating as the owner; one batch of 6: four records, one
    // invalid, one re-upload of the first under another message id.
    let env = TestEnv::new().await;
    let runtime = runtime_url(&env);
    let vars = [
        ("EDC__POSTGRES__URL", runtime.as_str()),
        ("EDC__POSTGRES__MIGRATE_URL", env.db_url.as_str()),
        ("EDC__POSTGRES__ALLOW_OWNER_RUNTIME", "false"),
    ];
    let events = env.listen_events("#").await;
    let batch = uuid::Uuid::new_v4().to_string();
    let in_batch = |mut r: serde_json::Value| {
        r["batch"] = serde_json::json!({"id": batch, "size": 6});
        r
    };
    let records: Vec<serde_json::Value> = (0..4).map(|_| in_batch(record(vs_items()))).collect();
    let mut invalid = in_batch(record(vs_items()));
    invalid["form"] = serde_json::json!("NOPE");
    let mut first: Vec<(String, Vec<u8>)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("rt-{i}"), bytes(r)))
        .collect();
    first.push(("rt-invalid".into(), bytes(&invalid)));
    env.publish(&first).await;

    // Act
    let daemon = Daemon::start(env.settings(&vars));
    daemon.wait_settled(5, WAIT).await;
    env.publish(&[("rt-reupload", bytes(&records[0]))]).await;
    daemon.wait_settled(6, WAIT).await;
    wait_for("the outbox relayed and emptied", WAIT, || async {
        env.count("SELECT count(*) FROM outbox").await == 0
            && env
                .count("SELECT count(*) FROM batches WHERE completed_at IS NOT NULL")
                .await
                == 1
    })
    .await;
    wait_for("the relay's events in the queue", WAIT, || async {
        env.ready(&events).await >= 5
    })
    .await;
    let summary = daemon.stop().await;

    // Assert: stored, rejected, counted, published, all by the runtime role.
    assert_eq!(summary.accepted + summary.queried, 4, "{summary}");
    assert_eq!(summary.duplicate, 1, "{summary}");
    assert_eq!(summary.dead_lettered_total(), 1, "{summary}");
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 4);
    assert_eq!(env.count("SELECT count(*) FROM audit_trail").await, 4);
    assert_eq!(env.count("SELECT count(*) FROM rejections").await, 1);
    assert_eq!(env.count("SELECT count(*) FROM duplicates_seen").await, 1);
    let published: Vec<String> = env
        .drain(&events)
        .await
        .iter()
        .map(|m| m.delivery.routing_key.to_string())
        .collect();
    assert_eq!(
        published
            .iter()
            .filter(|k| k.starts_with("record."))
            .count(),
        4,
        "{published:?}"
    );
    assert!(
        published.iter().any(|k| k == "batch.completed"),
        "{published:?}"
    );

    // The tools, as the runtime role too.
    let status = edc(&env, &vars, &["batch", "status", &batch]);
    assert!(status.status.success(), "{}", text(&status));
    assert!(text(&status).contains("complete"), "{}", text(&status));
    let dry = edc(&env, &vars, &["dlq", "replay", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("nothing was changed"), "{}", text(&dry));
    assert_eq!(
        env.drain_dlq().await.len(),
        1,
        "the dry run kept the dead letter"
    );
    // The horizon is at least a day: the re-upload's id is made two days old (as the owner).
    env.db()
        .await
        .batch_execute("UPDATE duplicates_seen SET seen_at = now() - interval '2 days'")
        .await
        .unwrap();
    let pruned = edc(&env, &vars, &["prune", "--older-than", "1day"]);
    assert!(pruned.status.success(), "{}", text(&pruned));
    assert!(
        text(&pruned).contains("duplicates_seen 1 rows"),
        "{}",
        text(&pruned)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_runtime_role_without_its_grants_stops_the_start_and_migrate_grants_them_again() {
    // Arrange: grants taken away behind the migrations' back.
    let env = TestEnv::new().await;
    env.db()
        .await
        .batch_execute(
            "REVOKE ALL ON delivery_ledger FROM edc_runtime;
             REVOKE EXECUTE ON FUNCTION complete_batches() FROM edc_runtime",
        )
        .await
        .unwrap();
    let runtime = runtime_url(&env);
    let vars = [
        ("EDC__POSTGRES__URL", runtime.as_str()),
        ("EDC__POSTGRES__MIGRATE_ON_START", "false"),
    ];

    // Act: a start as the runtime role, migrations left to a job.
    let started = Instant::now();
    let out = edc(&env, &vars, &["run"]);

    // Assert: refused at once, naming what is missing.
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));
    for needle in [
        "lacks",
        "DELETE on delivery_ledger",
        "EXECUTE on complete_batches()",
        "edc_runtime",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(!err.contains("edc_app:edc_app"), "{err}");

    // Act: the migration job (as the owner) grants again; the daemon then starts and stores.
    let migrate = edc(&env, &[], &["migrate"]);
    assert!(migrate.status.success(), "{}", text(&migrate));
    env.publish(&[("after-grant", bytes(&record(vs_items())))])
        .await;
    let daemon = Daemon::start(env.settings(&vars));
    daemon.wait_settled(1, WAIT).await;
    let summary = daemon.stop().await;
    assert_eq!(summary.accepted, 1, "{summary}");
    env.cleanup().await;
}

/// Takes EXECUTE on every `ingest_records` from the runtime role, as an operator might by mistake.
const REVOKE_INGEST: &str = "DO $$
    DECLARE f regprocedure;
    BEGIN
        FOR f IN SELECT oid::regprocedure FROM pg_proc WHERE proname = 'ingest_records' LOOP
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM edc_runtime', f);
        END LOOP;
    END $$";

#[tokio::test]
async fn a_grant_revoked_while_running_pauses_like_an_outage_and_dead_letters_nothing() {
    // Arrange: the daemon as edc_app (owner refused, as by default), ready.
    let env = TestEnv::new().await;
    let runtime = runtime_url(&env);
    let vars = [
        ("EDC__POSTGRES__URL", runtime.as_str()),
        ("EDC__POSTGRES__MIGRATE_URL", env.db_url.as_str()),
        ("EDC__POSTGRES__ALLOW_OWNER_RUNTIME", "false"),
        ("EDC__RETRY__INITIAL_DELAY", "200ms"),
        ("EDC__RETRY__MAX_DELAY", "400ms"),
    ];
    let mut daemon = run_daemon(&env, &vars);
    let port = daemon.wait_ready(WAIT).await;

    // Act: EXECUTE on ingest_records revoked behind the daemon's back; then records arrive.
    env.db().await.batch_execute(REVOKE_INGEST).await.unwrap();
    let bodies: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("revoked-{i}"), bytes(&record(vs_items()))))
        .collect();
    env.publish(&bodies).await;

    // Assert: the database is unavailable to us: the gate closes, readiness goes 503, and the
    // prober keeps it closed while the grant is missing (it names what is missing).
    wait_for("/readyz 503", WAIT, || async {
        matches!(http_get(port, "/readyz").await, Some((503, _)))
    })
    .await;
    assert_eq!(scrape(port).await.count("edc_db_gate_open"), 0);
    daemon
        .wait_output("lacks EXECUTE on ingest_records(", WAIT)
        .await;
    // With retries this short, a record treated as failing would have been dead-lettered by now
    // (5 attempts, 200 to 400 ms apart).
    wait_for("the prober refused three times", WAIT, || async {
        daemon
            .stderr()
            .matches("lacks EXECUTE on ingest_records(")
            .count()
            >= 3
    })
    .await;
    assert!(matches!(http_get(port, "/readyz").await, Some((503, _))));
    assert_eq!(env.count("SELECT count(*) FROM rejections").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 0);
    assert_eq!(env.ready(&env.dlq).await, 0);
    let m = scrape(port).await;
    assert_eq!(
        m.count(r#"edc_messages_total{outcome="dead_lettered"}"#),
        0,
        "nothing dead-lettered"
    );

    // Act: the owner grants again (`edc-ingest migrate`, as the README says).
    let migrate = edc(&env, &[], &["migrate"]);
    assert!(migrate.status.success(), "{}", text(&migrate));

    // Assert: the gate opens and every record is stored exactly once.
    wait_for("the five records stored", WAIT, || async {
        env.count("SELECT count(*) FROM crf_records").await == 5
    })
    .await;
    wait_for("/readyz 200 again", WAIT, || async {
        matches!(http_get(port, "/readyz").await, Some((200, _)))
    })
    .await;
    let exit = daemon.stop(WAIT).await;
    assert_eq!(exit.code(), Some(0), "{}", exit.stdout);
    assert_eq!(
        env.count("SELECT count(*) FROM audit_trail WHERE action = 'created'")
            .await,
        5
    );
    assert_eq!(env.count("SELECT count(*) FROM rejections").await, 0);
    assert!(env.drain_dlq().await.is_empty());
    let summary = exit.stdout;
    assert_eq!(summary_field(&summary, "accepted"), Some(5), "{summary}");
    assert_eq!(
        summary_field(&summary, "dead_lettered"),
        Some(0),
        "{summary}"
    );
    env.cleanup().await;
}
