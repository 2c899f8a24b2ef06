//! The SAE fast lane under load. It runs in this serial suite because it needs the machine to itself:
//! it measures how long an urgent record waits behind a busy daemon.

use std::time::Duration;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn an_urgent_record_overtakes_a_backlog_of_twenty_thousand() {
    // Arrange: 20,000 ordinary records queued and the daemon busy with them
    let env = TestEnv::new().await;
    let lines = generated(20_000, 3, 0.0, 0.0);
    let settings = env.settings(&[]);
    edc_ingest::tools::publish::publish(
        &settings.amqp,
        &settings.retry,
        lines.join("\n").as_bytes(),
    )
    .await
    .unwrap();
    let daemon = Daemon::start(settings.clone());
    wait_for("the daemon busy with the backlog", WAIT, || async {
        env.count("SELECT count(*) FROM crf_records").await >= 500
    })
    .await;

    // Act: a serious adverse event arrives on the fast lane
    let mut sae =
        record(serde_json::json!({"AETERM": "Anaphylaxis", "AESER": "Y", "AESTDAT": "2026-11-20"}));
    sae["form"] = serde_json::json!("AE");
    let id = uuid::Uuid::parse_str(sae["record_id"].as_str().unwrap()).unwrap();
    let mut urgent = settings.amqp.clone();
    urgent.queue = env.urgent_queue();
    let sent = std::time::Instant::now();
    edc_ingest::tools::publish::publish(&urgent, &settings.retry, sae.to_string().as_bytes())
        .await
        .unwrap();
    let db = env.db().await;
    wait_for("the urgent record stored", WAIT, || async {
        db.query_opt("SELECT 1 FROM crf_records WHERE record_id = $1", &[&id])
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let latency = sent.elapsed();
    let backlog_left = 20_000 - env.count("SELECT count(*) FROM crf_records").await;
    daemon.stop().await;

    // Assert: stored within a second, while most of the backlog still waited
    println!(
        "fast lane: urgent record stored {latency:?} after publishing, {backlog_left} ordinary records still waiting"
    );
    assert!(
        latency < Duration::from_secs(1),
        "urgent record took {latency:?}"
    );
    assert!(
        backlog_left > 1000,
        "the backlog was still there ({backlog_left} left)"
    );
    env.cleanup().await;
}
