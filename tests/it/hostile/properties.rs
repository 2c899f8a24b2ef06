//! AMQP properties an uploader sets to values the daemon must survive: times no clock can hold, and
//! identifiers with characters PostgreSQL cannot store. Against the real broker and database.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, ShortString};
use serde_json::json;

use super::{WAIT, headers};
use crate::helpers::*;

#[tokio::test]
async fn times_past_what_a_clock_holds_neither_stop_the_daemon_nor_lose_a_record() {
    // Arrange: four records, each stamped with a time the daemon cannot turn into a clock reading:
    // the AMQP timestamp 2^64-1 seconds (which panicked the process), and the millisecond header at
    // i64::MAX, negative, and as an AMQP timestamp of 2^64-1.
    let env = TestEnv::new().await;
    let stamps: Vec<(&str, BasicProperties)> = vec![
        (
            "ts-max",
            BasicProperties::default().with_timestamp(u64::MAX),
        ),
        (
            "ms-max",
            BasicProperties::default().with_headers(headers(&[(
                "timestamp_in_ms",
                AMQPValue::LongLongInt(i64::MAX),
            )])),
        ),
        (
            "ms-negative",
            BasicProperties::default()
                .with_timestamp(u64::MAX)
                .with_headers(headers(&[(
                    "timestamp_in_ms",
                    AMQPValue::LongLongInt(-1_700_000_000_000),
                )])),
        ),
        (
            "ms-as-timestamp",
            BasicProperties::default().with_headers(headers(&[(
                "timestamp_in_ms",
                AMQPValue::Timestamp(u64::MAX),
            )])),
        ),
    ];
    for (id, props) in stamps {
        let props = props.with_message_id(ShortString::from(id));
        env.publish_with(&bytes(&record(vs_items())), props).await;
    }

    // Act: the real binary, whose exit code tells a panic (101) from a clean stop.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = run_daemon(&env, &[("EDC__HTTP__LISTEN", &listen)]);
    let world = &env;
    wait_for("the four records stored, or the daemon dead", WAIT, || {
        let dead = daemon.exited().is_some();
        async move { dead || world.count("SELECT count(*) FROM crf_records").await == 4 }
    })
    .await;
    assert!(
        daemon.exited().is_none(),
        "the daemon died:\n{}",
        daemon.tail(20)
    );
    let metrics = scrape(port).await;
    let exit = daemon.stop(WAIT).await;

    // Assert: still up until asked to stop, each record stored once, and none of these times was
    // taken for a publication time.
    assert!(exit.success(), "{}", exit.stderr);
    assert_eq!(
        env.count("SELECT count(DISTINCT message_id) FROM crf_records")
            .await,
        4
    );
    assert_eq!(
        metrics.get("edc_publish_to_commit_seconds_count"),
        Some(0.0)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn identifiers_postgresql_cannot_store_get_a_clear_outcome_and_nothing_spins() {
    // Arrange: an allowed reply queue, and messages whose message_id, correlation_id or reply_to
    // hold a NUL or other control characters.
    let env = TestEnv::new().await;
    let replies = format!("edc.reply.t{}", env.suffix);
    env.declare_queue(&replies).await;
    let long_id = "é".repeat(127); // 254 bytes: nearly the most a shortstr holds
    let mut bad = record(vs_items());
    bad["visit"] = json!("WEEK99");
    let s = |v: &str| ShortString::from(v);
    let answered =
        |p: BasicProperties, corr: &str| p.with_reply_to(s(&replies)).with_correlation_id(s(corr));
    let cases: Vec<(&str, Vec<u8>, BasicProperties)> = vec![
        // Refused as invalid, whether the record is valid or not: the id cannot be stored.
        (
            "nul id",
            bytes(&record(vs_items())),
            BasicProperties::default().with_message_id(s("id\0x")),
        ),
        (
            "nul id, bad record",
            bytes(&bad),
            BasicProperties::default().with_message_id(s("bad\0")),
        ),
        // Stored as they are: text holds control characters.
        (
            "control id",
            bytes(&record(vs_items())),
            BasicProperties::default().with_message_id(s("c\u{1}\u{7f}\u{9b}\t")),
        ),
        (
            "long id",
            bytes(&record(vs_items())),
            BasicProperties::default().with_message_id(s(&long_id)),
        ),
        // Stored, no answer: neither a NUL correlation id nor such a reply address can be answered.
        (
            "nul corr",
            bytes(&record(vs_items())),
            answered(
                BasicProperties::default().with_message_id(s("m-corr")),
                "k\0",
            ),
        ),
        (
            "nul reply",
            bytes(&record(vs_items())),
            BasicProperties::default()
                .with_message_id(s("m-reply"))
                .with_reply_to(s(&format!("{replies}\0"))),
        ),
        (
            "esc reply",
            bytes(&record(vs_items())),
            BasicProperties::default()
                .with_message_id(s("m-esc"))
                .with_reply_to(s(&format!("{replies}\u{1b}[2J"))),
        ),
        // The one answer that goes out: answers work, so the missing ones are refused.
        (
            "answered",
            bytes(&record(vs_items())),
            answered(
                BasicProperties::default().with_message_id(s("m-ok")),
                "corr-ok",
            ),
        ),
    ];
    for (_, body, props) in &cases {
        env.publish_with(body, props.clone()).await;
    }

    // Act
    let daemon = Daemon::start(env.settings(&[("EDC__RETRY__INITIAL_DELAY", "100ms")]));
    daemon.wait_settled(cases.len() as u64, WAIT).await;
    wait_for("the one answer", WAIT, || async {
        env.ready(&replies).await == 1
    })
    .await;
    let refused_replies = daemon.stats.reply_to_refused.get();
    let summary = daemon.stop().await;

    // Assert: six stored, two refused once each, nothing postponed, retried or given back.
    assert_eq!(summary.accepted, 6, "{summary}");
    assert_eq!(
        summary.dead_lettered_of(edc_ingest::pipeline::RejectKind::Invalid),
        2,
        "{summary}"
    );
    assert_eq!(
        (summary.postponed, summary.retried, summary.requeued),
        (0, 0, 0),
        "{summary}"
    );
    assert_eq!(refused_replies, 3);
    let db = env.db().await;
    let stored: Vec<String> = db
        .query(
            "SELECT message_id FROM crf_records WHERE message_id IS NOT NULL ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        stored.contains(&"c\u{1}\u{7f}\u{9b}\t".to_string()),
        "{stored:?}"
    );
    assert!(stored.contains(&long_id), "{stored:?}");
    assert_eq!(
        env.count("SELECT count(*) FROM rejections WHERE kind = 'invalid' AND message_id IS NULL AND reason LIKE '%message_id%'")
            .await,
        2
    );
    let letters = env.drain_dlq().await;
    assert_eq!(letters.len(), 2);
    for l in &letters {
        assert_eq!(header(l, "x-edc-error-kind").as_deref(), Some("invalid"));
        let reason = header(l, "x-edc-error").unwrap();
        assert!(
            reason.contains("message_id") && !reason.contains('\0'),
            "{reason:?}"
        );
    }
    let answers = env.drain(&replies).await;
    assert_eq!(
        answers[0]
            .delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str()),
        Some("corr-ok")
    );
    env.delete_queue(&replies).await;
    env.cleanup().await;
}
