//! Every outcome of the contract in one world: accepted, queried, each kind of dead letter, the
//! redelivery and the conflicting twin, with the daemon's batches of `batch_size`.

use serde_json::json;

use super::WAIT;
use crate::helpers::*;

/// Publishes one message of each outcome, runs the daemon with `batch_size`, and checks what
/// became of each, in the database and on the dead-letter queue.
pub async fn every_outcome(batch_size: usize) {
    // Arrange
    let env = TestEnv::new().await;
    let accepted = record(vs_items());
    let mut queried = record(vs_items());
    queried["items"]["SYSBP"] = json!(300); // out of range
    queried["items"]["DIABP"] = json!(20); // below range; still below systolic, so VS001 holds
    let mut invalid = record(vs_items());
    invalid["items"]["SYSBP"] = json!("abc");
    let mut nul = record(vs_items());
    nul["subject"] = json!("DEMO-001-03-\u{0}42");
    let mut conflicting = accepted.clone();
    conflicting["items"]["PULSE"] = json!(99);
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(5000)).into_bytes();
    let batch = batch_size.to_string();
    // One worker: while it stores the first record, the others gather into a batch.
    let settings = env.settings(&[
        ("EDC__MAX_MESSAGE_BYTES", "4096"),
        ("EDC__BATCH_SIZE", &batch),
        ("EDC__WORKERS", "1"),
    ]);
    let mut daemon = (batch_size == 1).then(|| Daemon::start(settings.clone()));

    // Act
    env.publish(&[
        ("accepted", bytes(&accepted)),
        ("queried", bytes(&queried)),
        ("malformed", b"{\"schema\": \"edc.crf.v1\", ".to_vec()),
        ("not-object", b"[1, 2, 3]".to_vec()),
        ("too-large", big),
        ("invalid", bytes(&invalid)),
        ("nul", bytes(&nul)),
    ])
    .await;
    if let Some(d) = &daemon {
        d.wait_settled(7, WAIT).await;
    }
    // Redelivery of the same bytes, and a different payload under the same key.
    env.publish(&[
        ("again", bytes(&accepted)),
        ("conflict", bytes(&conflicting)),
    ])
    .await;
    let daemon = daemon.take().unwrap_or_else(|| Daemon::start(settings));
    daemon.wait_settled(9, WAIT).await;
    let summary = daemon.stop().await;
    if batch_size > 1 {
        assert!(
            summary.groups >= 1,
            "records were committed in batches: {summary:?}"
        );
    }

    // Assert: counters
    assert_eq!(
        (summary.accepted, summary.queried, summary.duplicate),
        (1, 1, 1),
        "{summary}"
    );
    assert_eq!(summary.dead_lettered_total(), 6, "{summary}");

    // Assert: database
    let db = env.db().await;
    let rows = db.query("SELECT status, protocol_version, birth_year, message_id FROM crf_records ORDER BY status", &[]).await.unwrap();
    let got: Vec<(String, String, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "accepted".into(),
                "2.1".into(),
                Some("1961".into()),
                Some("accepted".into())
            ),
            (
                "queried".into(),
                "2.1".into(),
                Some("1961".into()),
                Some("queried".into())
            ),
        ]
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_trail WHERE action = 'created'")
            .await,
        2
    );
    let findings: Vec<String> = db
        .query(
            "SELECT check_id FROM data_queries WHERE status = 'open' ORDER BY check_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(findings, vec!["DIABP", "SYSBP"]);
    let kinds: Vec<(String, Option<String>)> = db
        .query(
            "SELECT kind, message_id FROM rejections ORDER BY message_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expect = |k: &str, m: &str| (k.to_string(), Some(m.to_string()));
    assert_eq!(
        kinds,
        vec![
            expect("conflict", "conflict"),
            expect("invalid", "invalid"),
            expect("malformed", "malformed"),
            expect("malformed", "not-object"),
            expect("invalid", "nul"),
            expect("too_large", "too-large"),
        ]
    );

    // Assert: dead letters keep body and properties, and say why in our words
    let dead = env.drain_dlq().await;
    assert_eq!(dead.len(), 6);
    let conflict = dead
        .iter()
        .find(|m| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str())
                == Some("conflict")
        })
        .unwrap();
    assert_eq!(
        conflict.delivery.data,
        bytes(&conflicting),
        "body kept byte for byte"
    );
    assert_eq!(
        conflict
            .delivery
            .properties
            .correlation_id()
            .as_ref()
            .unwrap()
            .as_str(),
        "corr-conflict"
    );
    assert_eq!(
        header(conflict, "x-edc-error-kind").as_deref(),
        Some("conflict")
    );
    assert!(
        header(conflict, "x-edc-error")
            .unwrap()
            .contains("different payload")
    );
    for m in &dead {
        for h in [
            "x-edc-error-kind",
            "x-edc-error",
            "x-edc-attempts",
            "x-edc-failed-at",
            "x-edc-consumer",
        ] {
            assert!(header(m, h).is_some(), "{h} missing");
        }
        let all_headers = format!("{:?}", m.delivery.properties.headers());
        assert!(
            !all_headers.contains("Lovelace") && !all_headers.contains("abc"),
            "{all_headers}"
        );
    }
    assert_eq!(env.ready(&env.queue).await, 0);
    env.cleanup().await;
}
