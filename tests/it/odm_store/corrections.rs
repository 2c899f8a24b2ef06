//! Corrections the way ODM makes them: a changed value is a new version (the earlier ones kept),
//! Update merges onto the latest, Remove withdraws, the same content again stores nothing, and
//! importers racing on one record each get a version of their own. The daemon runs as the runtime
//! role, which also reads `item_values`.

use tokio_postgres::NoTls;

use super::*;

/// This test's database, as the runtime role (`edc_app`).
fn runtime_url(env: &TestEnv) -> String {
    let base = pg_runtime_url();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{}", env.db_name)
}

/// Publishes one ODM document and waits until the daemon settled `n` messages in all.
async fn send(env: &TestEnv, daemon: &Daemon, body: Vec<u8>, id: &str, n: u64) {
    env.publish_with(&body, odm_props("application/xml", id))
        .await;
    daemon.wait_settled(n, WAIT).await;
}

/// (version, status, items) of every stored version of F.VS, in order.
async fn versions(env: &TestEnv) -> Vec<(i32, String, serde_json::Value)> {
    let rows = env
        .db()
        .await
        .query(
            "SELECT version, status, items FROM crf_records WHERE form = 'F.VS' ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_changed_value_is_a_new_version_update_merges_and_remove_withdraws() {
    let env = TestEnv::new().await;
    let runtime = runtime_url(&env);
    let vars = [
        ("EDC__POSTGRES__URL", runtime.as_str()),
        ("EDC__POSTGRES__MIGRATE_URL", env.db_url.as_str()),
        ("EDC__POSTGRES__ALLOW_OWNER_RUNTIME", "false"),
    ];
    let daemon = Daemon::start(odm_settings(&env, &vars));
    let items = |pulse: &str| {
        format!(
            r#"<ItemData ItemOID="I.PULSE" Value="{pulse}"/><ItemData ItemOID="I.TEMP" Value="36.8"/>
               <ItemData ItemOID="I.INIT" Value="ADA"/>"#
        )
    };
    let at = "2026-11-20T08:30:00Z";

    // Act 1: a pulse out of its soft range (a data query), then the same form with it corrected.
    let first = document("Snapshot", &vs_form("", at, "", &items("200")));
    send(&env, &daemon, first, "c-1", 1).await;
    let reason = "transcription error, chart of ADA";
    let corrected = document(
        "Snapshot",
        &vs_form("", "2026-11-21T09:00:00Z", reason, &items("72")),
    );
    send(&env, &daemon, corrected.clone(), "c-2", 2).await;
    send(&env, &daemon, corrected, "c-2-again", 3).await;

    // Assert: version 2 beside version 1; the query of version 1 resolved by version 2.
    let stored = versions(&env).await;
    assert_eq!(stored.len(), 2, "the same correction again stores nothing");
    assert_eq!((stored[0].0, stored[0].1.as_str()), (1, "queried"));
    assert_eq!(stored[0].2["I.PULSE"], 200);
    assert_eq!((stored[1].0, stored[1].1.as_str()), (2, "accepted"));
    assert_eq!(stored[1].2["I.PULSE"], 72);
    let db = env.db().await;
    let query = db
        .query_one(
            "SELECT version, status, resolved_by_version FROM data_queries WHERE check_id = 'I.PULSE'",
            &[],
        )
        .await
        .unwrap();
    let query: (i32, String, Option<i32>) = (query.get(0), query.get(1), query.get(2));
    assert_eq!(query, (1, "resolved".to_string(), Some(2)));
    // The reason for change is on the audit row as a keyed pseudonym, never as its text.
    let reason_stored: Option<String> = db
        .query_one(
            "SELECT reason_for_change FROM audit_trail WHERE version = 2",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let reason_stored = reason_stored.expect("a reason for change on version 2");
    assert_eq!(reason_stored.len(), 64, "{reason_stored}");
    assert!(reason_stored.chars().all(|c| c.is_ascii_hexdigit()));
    let leaks = env
        .count("SELECT count(*) FROM audit_trail WHERE concat_ws(' ', detail, reason_for_change, actor) LIKE '%ADA%'")
        .await;
    assert_eq!(leaks, 0, "neither the reason's text nor the initials");

    // Act 2: an Update that gives one item only, twice.
    let note = r#"<ItemData ItemOID="I.NOTE" Value="re-measured"/>"#;
    let update = document(
        "Transactional",
        &vs_form(
            r#"TransactionType="Update""#,
            "2026-11-22T09:00:00Z",
            "",
            note,
        ),
    );
    send(&env, &daemon, update.clone(), "c-3", 4).await;
    send(&env, &daemon, update, "c-3-again", 5).await;

    // Assert: version 3 is version 2 with the note; the pseudonym kept as it was, not re-keyed.
    let stored = versions(&env).await;
    assert_eq!(stored.len(), 3);
    let (v2, v3) = (&stored[1].2, &stored[2].2);
    assert_eq!((stored[2].0, stored[2].1.as_str()), (3, "accepted"));
    assert_eq!(v3["I.NOTE"], "re-measured");
    assert_eq!(v3["I.PULSE"], v2["I.PULSE"]);
    assert_eq!(v3["I.TEMP"], v2["I.TEMP"]);
    assert_eq!(v3["I.INIT"], v2["I.INIT"]);
    assert!(v3["I.INIT"].as_str().unwrap().starts_with("psn:"));

    // Act 3: Remove, twice.
    let remove = document(
        "Transactional",
        &vs_form(
            r#"TransactionType="Remove""#,
            "2026-11-23T09:00:00Z",
            "",
            "",
        ),
    );
    send(&env, &daemon, remove.clone(), "c-4", 6).await;
    send(&env, &daemon, remove, "c-4-again", 7).await;
    daemon.stop().await;

    // Assert: version 4 withdraws the form, versions 1 to 3 stay; the view has no value of it,
    // and the runtime role reads the view.
    let stored = versions(&env).await;
    assert_eq!(stored.len(), 4, "the second removal stores nothing");
    assert_eq!((stored[3].0, stored[3].1.as_str()), (4, "removed"));
    assert_eq!(stored[3].2, serde_json::json!({}));
    let (as_runtime, conn) = tokio_postgres::connect(&runtime, NoTls).await.unwrap();
    tokio::spawn(conn);
    let seen: i64 = as_runtime
        .query_one("SELECT count(*) FROM item_values", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0, "a removed form has no values");
    let actors = env
        .count("SELECT count(*) FROM audit_trail WHERE actor = 'U.NURSE' AND uploaded_by = 'guest'")
        .await;
    assert_eq!(actors, 4);
    env.cleanup().await;
}

/// `n` different snapshots of one form taken by `workers` workers side by side: each must be
/// stored as a version of its own, versions 1 to `n`, none lost, none twice, none dead-lettered.
async fn race(n: usize, workers: usize) {
    // Arrange
    let env = TestEnv::new().await;
    let bodies: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let items = format!(r#"<ItemData ItemOID="I.PULSE" Value="{}"/>"#, 60 + i);
            document("Snapshot", &vs_form("", "2026-11-20T08:30:00Z", "", &items))
        })
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        env.publish_with(body, odm_props("application/xml", &format!("r-{i}")))
            .await;
    }

    // Act
    let workers = workers.to_string();
    let daemon = Daemon::start(odm_settings(
        &env,
        &[
            ("EDC__WORKERS", &workers),
            ("EDC__POSTGRES__POOL_SIZE", &workers),
        ],
    ));
    daemon.wait_settled(n as u64, WAIT).await;
    let summary = daemon.stop().await;

    // Assert: versions 1 to n, each pulse once, no conflict, nothing dead-lettered.
    let stored = versions(&env).await;
    let numbers: Vec<i32> = stored.iter().map(|v| v.0).collect();
    assert_eq!(numbers, (1..=n as i32).collect::<Vec<_>>());
    let mut pulses: Vec<i64> = stored
        .iter()
        .map(|v| v.2["I.PULSE"].as_i64().unwrap())
        .collect();
    pulses.sort();
    assert_eq!(pulses, (60..60 + n as i64).collect::<Vec<_>>());
    let created = env
        .count("SELECT count(*) FROM audit_trail WHERE action = 'created'")
        .await;
    assert_eq!(created, n as i64, "one audit row a version");
    assert_eq!(summary.dead_lettered_total(), 0);
    env.cleanup().await;
}

#[tokio::test]
async fn importers_racing_on_one_record_each_store_a_version_of_their_own() {
    race(12, 4).await;
}

/// Each message of one form decides its version against the latest it read and, when another
/// stored that version first, decides again; past a few such losses it takes the record's lock.
/// Forty snapshots and sixteen workers on one record make many of them lose.
#[tokio::test]
async fn a_record_too_busy_to_decide_optimistically_is_stored_under_its_lock_losing_nothing() {
    race(40, 16).await;
}

#[tokio::test]
async fn a_correction_that_still_fails_keeps_the_query_open_and_one_that_passes_resolves_both() {
    let env = TestEnv::new().await;
    let daemon = Daemon::start(odm_settings(&env, &[]));
    let pulse = |p: &str, at: &str| {
        let items = format!(r#"<ItemData ItemOID="I.PULSE" Value="{p}"/>"#);
        document("Snapshot", &vs_form("", at, "", &items))
    };

    // Act: out of range, still out of range, then within it.
    send(
        &env,
        &daemon,
        pulse("200", "2026-11-20T08:00:00Z"),
        "q-1",
        1,
    )
    .await;
    send(
        &env,
        &daemon,
        pulse("190", "2026-11-21T08:00:00Z"),
        "q-2",
        2,
    )
    .await;
    assert_eq!(pulse_queries(&env).await, ["1 open", "2 open"]);
    send(&env, &daemon, pulse("80", "2026-11-22T08:00:00Z"), "q-3", 3).await;
    daemon.stop().await;

    // Assert
    assert_eq!(pulse_queries(&env).await, ["1 resolved 3", "2 resolved 3"]);
    let statuses = versions(&env).await;
    let statuses: Vec<&str> = statuses.iter().map(|v| v.1.as_str()).collect();
    assert_eq!(statuses, ["queried", "queried", "accepted"]);
    env.cleanup().await;
}

/// The data queries of I.PULSE: "version status resolved_by_version", in order.
async fn pulse_queries(env: &TestEnv) -> Vec<String> {
    let rows = env
        .db()
        .await
        .query(
            "SELECT concat_ws(' ', version, status, resolved_by_version) \
             FROM data_queries WHERE check_id = 'I.PULSE' ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}
