//! No patient identifier reaches the database, a log line, a dead-letter header, `/metrics` or a
//! span attribute.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;
use crate::probes::assert_labels_bounded;

/// Every identifier value and `phi` item value in the generated lines (the needles to look for).
fn planted(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(ids) = v["identifiers"].as_object() {
            out.extend(ids.values().filter_map(|x| x.as_str().map(str::to_string)));
        }
        for phi in ["AETERM", "LBCOM"] {
            if let Some(s) = v["items"][phi].as_str() {
                out.push(s.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[tokio::test]
async fn no_planted_identifier_appears_in_a_database_dump_or_the_logs() {
    // Arrange: records full of identifiers, some invalid and some malformed (truncated mid-identifier)
    let env = TestEnv::new().await;
    let lines = generated(400, 7, 0.1, 0.1);
    let needles = planted(&lines);
    assert!(needles.len() > 100, "enough identifiers planted");
    env.publish_lines(&lines).await;

    // Act: the real binary at debug level, JSON logs captured
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let collector = Collector::start().await;
    let endpoint = collector.endpoint();
    // The kit sends its logs to files (a pipe nobody reads would fill up and block the daemon).
    let daemon = run_daemon(
        &env,
        &[
            ("EDC__LOG__FORMAT", "json"),
            ("EDC__LOG__LEVEL", "debug"),
            ("EDC__HTTP__LISTEN", &listen),
            ("EDC__OTEL__ENDPOINT", &endpoint),
        ],
    );
    wait_for("every message settled", Duration::from_secs(60), || async {
        env.count("SELECT (SELECT count(*) FROM crf_records) + (SELECT count(*) FROM rejections)")
            .await
            == 400
    })
    .await;
    // The metrics once every outcome is in: their labels are fixed values only.
    let metrics = scrape(port).await;
    assert_labels_bounded(&metrics);
    let exit = daemon.stop(Duration::from_secs(60)).await;
    let status = exit.status;
    let logs = exit.stdout + &exit.stderr;
    let attributes: String = collector
        .spans()
        .iter()
        .flat_map(attribute_values)
        .collect::<Vec<_>>()
        .join("\n");
    // The servers' own pg_dump: one of an older version refuses to dump a newer server.
    let dump = Command::new(repo().join("scripts/services.sh"))
        .args(["pg-dump", "--data-only", "--no-owner", &env.db_url])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    let headers: String = env
        .drain_dlq()
        .await
        .iter()
        .map(|m| format!("{:?}\n", m.delivery.properties.headers()))
        .collect();

    // Assert: the outputs are real (not empty) and hold none of the needles
    assert!(status.success());
    assert!(
        logs.contains("\"level\":\"DEBUG\"") || logs.contains("DEBUG"),
        "debug logs captured"
    );
    assert!(
        attributes.contains("record_id"),
        "span attributes were exported"
    );
    assert!(
        dump.contains("COPY public.crf_records"),
        "dump holds the records"
    );
    assert!(
        headers.contains("x-edc-error-kind"),
        "dead letters were produced"
    );
    assert!(
        metrics.count(r#"edc_messages_total{outcome="dead_lettered"}"#) > 0
            && metrics.count(r#"edc_messages_total{outcome="accepted"}"#) > 0,
        "the metrics counted the outcomes"
    );
    for needle in &needles {
        assert!(
            !dump.contains(needle.as_str()),
            "database dump contains an identifier"
        );
        assert!(
            !logs.contains(needle.as_str()),
            "logs contain an identifier"
        );
        assert!(
            !headers.contains(needle.as_str()),
            "dead-letter headers contain an identifier"
        );
        assert!(
            !metrics.0.contains(needle.as_str()),
            "/metrics contains an identifier"
        );
        assert!(
            !attributes.contains(needle.as_str()),
            "a span attribute contains an identifier"
        );
    }
    env.cleanup().await;
}
