//! What operators and data managers do: batch receipts, dead-letter tooling, protocol amendments
//! reloaded with SIGHUP. Through the real binary, as a person would run it.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// A study whose first protocol lacks SITE-04 (so records from there are invalid).
fn study_dir(dir: &Path, sites: &str, version: &str, effective_from: Option<&str>, file: &str) {
    let demo = std::fs::read_to_string(repo().join("config/studies/DEMO-001.yaml")).unwrap();
    let mut text = demo
        .replace(
            "sites: [SITE-01, SITE-02, SITE-03]",
            &format!("sites: [{sites}]"),
        )
        .replace("version: \"2.1\"", &format!("version: \"{version}\""));
    if let Some(from) = effective_from {
        text = text.replace(
            &format!("version: \"{version}\""),
            &format!("version: \"{version}\"\neffective_from: {from}"),
        );
    }
    std::fs::write(dir.join(file), text).unwrap();
}

#[tokio::test]
async fn batch_status_prints_the_receipt() {
    let env = TestEnv::new().await;
    let batch = uuid::Uuid::new_v4().to_string();
    let mut a = record(vs_items());
    a["batch"] = json!({"id": batch, "size": 2});
    let mut b = record(vs_items());
    b["batch"] = json!({"id": batch, "size": 2});
    b["items"]["SYSBP"] = json!(20);
    env.publish(&[("a", bytes(&a)), ("b", bytes(&b))]).await;
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(2, WAIT).await;
    // The relay completes batches shortly after their last commit.
    wait_for("the batch completed", WAIT, || async {
        env.count("SELECT count(*) FROM batches WHERE completed_at IS NOT NULL")
            .await
            == 1
    })
    .await;
    daemon.stop().await;

    let out = edc(&env, &[], &["batch", "status", &batch]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("complete at"), "{shown}");
    assert!(
        shown.contains("accepted       1") && shown.contains("queried        1"),
        "{shown}"
    );
    let unknown = edc(
        &env,
        &[],
        &["batch", "status", &uuid::Uuid::new_v4().to_string()],
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown).contains("no batch"));
    env.cleanup().await;
}

#[tokio::test]
async fn dead_letters_are_listed_shown_replayed_once_and_purged_without_showing_identifiers() {
    // Arrange: a protocol without SITE-04, and records from SITE-04 dead-lettered as invalid
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    study_dir(
        dir.path(),
        "SITE-01, SITE-02, SITE-03",
        "2.1",
        None,
        "DEMO-001.yaml",
    );
    let studies = dir.path().display().to_string();
    let cfg: &[(&str, &str)] = &[("EDC__STUDIES_DIR", &studies)];
    let mut from_site_4: Vec<serde_json::Value> = (0..3).map(|_| record(vs_items())).collect();
    for r in &mut from_site_4 {
        r["site"] = json!("SITE-04");
    }
    let mut all: Vec<(String, Vec<u8>)> = from_site_4
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("s4-{i}"), bytes(r)))
        .collect();
    all.push(("junk".into(), b"{not json at all, Ada Lovelace".to_vec()));
    env.publish(&all).await;
    let daemon = Daemon::start(env.settings(cfg));
    daemon.wait_settled(4, WAIT).await;
    daemon.stop().await;

    // list and show: counts and headers, never an identifier
    let list = text(&edc(&env, cfg, &["dlq", "list"]));
    assert!(list.contains("4 dead letters"), "{list}");
    assert!(
        list.contains("3  invalid: site is not one of study DEMO-001's sites"),
        "{list}"
    );
    assert!(list.contains("1  malformed"), "{list}");
    let show = text(&edc(&env, cfg, &["dlq", "show", "--count", "10"]));
    assert!(
        show.contains("attempts: 1\n") && show.contains("\"SYSBP\":128"),
        "{show}"
    );
    for needle in [
        "Ada",
        "Lovelace",
        "1961-03-02",
        "7946",
        "MRN-778899",
        "Example Road",
        "ada@example.org",
    ] {
        assert!(
            !list.contains(needle) && !show.contains(needle),
            "{needle} printed"
        );
    }

    // The protocol is amended: SITE-04 joins. A dry run says what would happen and changes nothing.
    study_dir(
        dir.path(),
        "SITE-01, SITE-02, SITE-03, SITE-04",
        "2.2",
        None,
        "DEMO-001.yaml",
    );
    let dry = text(&edc(
        &env,
        cfg,
        &["dlq", "replay", "--kind", "invalid", "--dry-run"],
    ));
    assert_eq!(
        dry.matches("would be stored as accepted").count(),
        3,
        "{dry}"
    );
    assert!(dry.contains("nothing was changed"));
    assert_eq!(env.count("SELECT count(*) FROM dlq_actions").await, 0);

    // Replay for real, with the daemon running.
    let daemon = Daemon::start(env.settings(cfg));
    let replay = edc(
        &env,
        cfg,
        &["dlq", "replay", "--kind", "invalid", "--actor", "dm-jane"],
    );
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("replayed 3 of 3"),
        "{}",
        text(&replay)
    );
    daemon.wait_settled(3, WAIT).await;
    assert_eq!(
        env.count(
            "SELECT count(*) FROM crf_records WHERE site = 'SITE-04' AND protocol_version = '2.2'"
        )
        .await,
        3
    );

    // The same dead letter arriving again and replayed again stores nothing twice. Its rejections
    // row (same body, same message id) makes it edc-ingest's own: still `invalid`.
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let props = lapin::BasicProperties::default().with_message_id("s4-0".into());
    ch.basic_publish(
        "".into(),
        env.dlq.as_str().into(),
        Default::default(),
        &all[0].1,
        props,
    )
    .await
    .unwrap()
    .await
    .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    let dry = text(&edc(
        &env,
        cfg,
        &["dlq", "replay", "--kind", "invalid", "--dry-run"],
    ));
    assert!(
        dry.contains("would be a duplicate: record") && dry.contains("already stored"),
        "{dry}"
    );
    let again = text(&edc(
        &env,
        cfg,
        &["dlq", "replay", "--actor", "dm-jane", "--kind", "invalid"],
    ));
    assert!(again.contains("replayed 1 of 1"), "{again}");
    daemon.wait_settled(4, WAIT).await;
    let summary = daemon.stop().await;
    assert_eq!(summary.duplicate, 1, "{summary}");
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 3);
    assert_eq!(
        env.count("SELECT count(*) FROM dlq_actions WHERE action = 'replay' AND actor = 'dm-jane'")
            .await,
        4
    );

    // Purge asks first; --yes removes and records.
    let refused = edc(&env, cfg, &["dlq", "purge"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "purge without --kind is refused"
    );
    let unconfirmed = text(&edc(&env, cfg, &["dlq", "purge", "--kind", "malformed"]));
    assert!(unconfirmed.contains("not confirmed"), "{unconfirmed}");
    let purged = text(&edc(
        &env,
        cfg,
        &[
            "dlq",
            "purge",
            "--kind",
            "malformed",
            "--yes",
            "--actor",
            "dm-jane",
        ],
    ));
    assert!(purged.contains("purged 1"), "{purged}");
    assert!(env.drain_dlq().await.is_empty());
    assert_eq!(
        env.count("SELECT count(*) FROM dlq_actions WHERE action = 'purge'")
            .await,
        1
    );
    env.cleanup().await;
}

#[tokio::test]
async fn sighup_reloads_protocols_and_a_broken_file_leaves_the_old_ones_in_force() {
    // Arrange: the daemon (real binary) with a protocol lacking SITE-04
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    study_dir(
        dir.path(),
        "SITE-01, SITE-02, SITE-03",
        "1.0",
        None,
        "DEMO-001.yaml",
    );
    let studies = dir.path().display().to_string();
    let mut daemon = run_daemon(&env, &[("EDC__STUDIES_DIR", &studies)]);
    let site4 = || {
        let mut r = record(vs_items());
        r["site"] = json!("SITE-04");
        r
    };
    env.publish(&[("before", bytes(&site4()))]).await;
    wait_for("the first SITE-04 record refused", WAIT, || async {
        env.count("SELECT count(*) FROM rejections").await == 1
    })
    .await;

    // Act: an amendment from 2026-01-01 adds SITE-04; SIGHUP
    study_dir(
        dir.path(),
        "SITE-01, SITE-02, SITE-03, SITE-04",
        "2.0",
        Some("2026-01-01"),
        "DEMO-001-v2.yaml",
    );
    daemon.signal(Signal::Hup);
    daemon.wait_output("protocols reloaded", WAIT).await;
    env.publish(&[("after", bytes(&site4()))]).await;
    wait_for("the SITE-04 record stored under 2.0", WAIT, || async {
        env.count("SELECT count(*) FROM crf_records WHERE protocol_version = '2.0'")
            .await
            == 1
    })
    .await;

    // Act: a broken file, SIGHUP: refused with a clear line; version 2.0 stays in force
    std::fs::write(dir.path().join("broken.yaml"), "study: [unclosed").unwrap();
    daemon.signal(Signal::Hup);
    daemon.wait_output("protocol reload refused", WAIT).await;
    env.publish(&[("still", bytes(&site4()))]).await;
    wait_for("another SITE-04 record stored under 2.0", WAIT, || async {
        env.count("SELECT count(*) FROM crf_records WHERE protocol_version = '2.0'")
            .await
            == 2
    })
    .await;
    assert!(daemon.stop(WAIT).await.success());

    // check-config reports the broken file too
    let check = edc(&env, &[("EDC__STUDIES_DIR", &studies)], &["check-config"]);
    assert_eq!(check.status.code(), Some(2));
    assert!(text(&check).contains("broken.yaml"), "{}", text(&check));
    env.cleanup().await;
}
