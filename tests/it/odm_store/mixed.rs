//! ODM messages beside JSON ones on one queue: each kind takes its own path, both drain, and the
//! JSON records come out as they do alone.

use lapin::options::BasicPublishOptions;

use super::*;

/// Publishes ODM bodies to the work queue on one channel, with confirms.
async fn publish_odm(env: &TestEnv, bodies: &[Vec<u8>]) {
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let settings = env.settings(&[]);
    edc_ingest::broker::declare(&ch, &settings.amqp, &settings.retry)
        .await
        .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    for (i, body) in bodies.iter().enumerate() {
        let props = odm_props("application/xml", &format!("mixed-odm-{i}")).with_delivery_mode(2);
        let confirm = ch
            .basic_publish(
                ShortString::from(""),
                ShortString::from(env.queue.as_str()),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    conn.close(200, ShortString::from("bye")).await.unwrap();
}

#[tokio::test]
async fn odm_messages_beside_json_ones_both_drain() {
    // Arrange: 300 JSON records of DEMO-001 and 300 ODM messages of two forms each, interleaved
    // in time of publication by kind, for a daemon that knows both studies.
    let env = TestEnv::new().await;
    let studies = tempfile::tempdir().unwrap();
    for from in [
        "config/studies/DEMO-001.yaml",
        "tests/data/odm/store/ST.STORE.yaml",
    ] {
        let from = repo().join(from);
        std::fs::copy(&from, studies.path().join(from.file_name().unwrap())).unwrap();
    }
    let n = 300;
    let odm: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let items = r#"<ItemData ItemOID="I.PULSE" Value="70"/>"#;
            let one = vs_form("", "2026-11-20T08:30:00Z", "", items);
            let two = one.replace("SE.SCREEN", "SE.WEEK1");
            let both = format!("{one}\n{two}").replace("\"1001\"", &format!("\"S-{i}\""));
            document("Snapshot", &both)
        })
        .collect();
    env.publish_lines(&generated(n, 7, 0.0, 0.0)).await;
    publish_odm(&env, &odm).await;

    // Act
    let dir = studies.path().display().to_string();
    let settings = env.settings(&[("EDC__STUDIES_DIR", dir.as_str())]);
    let started = std::time::Instant::now();
    let daemon = Daemon::start(settings);
    daemon
        .wait_settled(2 * n as u64, Duration::from_secs(120))
        .await;
    let took = started.elapsed();
    let summary = daemon.stop().await;

    // Assert: every message stored; JSON records one each, ODM messages two each.
    assert_eq!(summary.dead_lettered_total(), 0);
    let by_source = |source: &str| {
        format!("SELECT count(*) FROM crf_records WHERE source = '{source}' AND version = 1")
    };
    assert_eq!(env.count(&by_source("edc.crf.v1")).await, n as i64);
    assert_eq!(env.count(&by_source("odm")).await, 2 * n as i64);
    eprintln!(
        "{} messages ({n} JSON, {n} ODM of 2 forms) drained in {:.2} s: {:.0} messages/s",
        2 * n,
        took.as_secs_f64(),
        (2 * n) as f64 / took.as_secs_f64()
    );
    env.cleanup().await;
}
