//! What monitors hear: events from the transactional outbox, alerts, batch receipts and result
//! callbacks.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

fn body(m: &lapin::message::BasicGetMessage) -> Value {
    serde_json::from_slice(&m.delivery.data).unwrap()
}

#[tokio::test]
async fn every_outcome_of_a_batch_is_announced_and_its_receipt_completes_once() {
    // Arrange: a batch of 7 messages: 3 accepted, 1 queried (and a hypertensive crisis), 1 serious
    // adverse event, 1 invalid, and a re-upload of the first under its own message id.
    let env = TestEnv::new().await;
    let events = env.listen_events("#").await;
    let batch = uuid::Uuid::new_v4();
    let in_batch = |mut r: Value| {
        r["batch"] = json!({"id": batch.to_string(), "size": 7});
        r
    };
    let accepted: Vec<Value> = (0..3).map(|_| in_batch(record(vs_items()))).collect();
    let mut queried = in_batch(record(vs_items()));
    queried["items"]["SYSBP"] = json!(300);
    let mut sae = in_batch(record(
        json!({"AETERM": "Anaphylaxis", "AESER": "Y", "AESTDAT": "2026-11-20"}),
    ));
    sae["form"] = json!("AE");
    let mut invalid = in_batch(record(vs_items()));
    invalid["site"] = json!("SITE-99");
    let daemon = Daemon::start(env.settings(&[]));

    // Act
    env.publish(&[
        ("a0", bytes(&accepted[0])),
        ("a1", bytes(&accepted[1])),
        ("a2", bytes(&accepted[2])),
        ("q", bytes(&queried)),
        ("sae", bytes(&sae)),
        ("bad", bytes(&invalid)),
    ])
    .await;
    daemon.wait_settled(6, WAIT).await;
    env.publish(&[("a0-again", bytes(&accepted[0]))]).await;
    daemon.wait_settled(7, WAIT).await;
    wait_for("the batch completed", WAIT, || async {
        env.count("SELECT count(*) FROM batch_receipts WHERE completed_at IS NOT NULL")
            .await
            == 1
    })
    .await;
    wait_for("the outbox drained", WAIT, || async {
        env.count("SELECT count(*) FROM outbox").await == 0
    })
    .await;
    daemon.stop().await;
    let got = env.drain(&events).await;

    // Assert: the events, by type
    let mut by_type: HashMap<String, Vec<Value>> = HashMap::new();
    for m in &got {
        let b = body(m);
        assert_eq!(
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .as_str(),
            b["event_id"].as_str().unwrap()
        );
        by_type
            .entry(m.delivery.routing_key.to_string())
            .or_default()
            .push(b);
    }
    let count = |t: &str| by_type.get(t).map_or(0, |v| v.len());
    assert_eq!(count("record.accepted"), 4, "{by_type:?}");
    assert_eq!(count("record.queried"), 1);
    assert_eq!(count("alert.raised"), 2);
    assert_eq!(count("batch.completed"), 1);
    let ids: HashSet<&str> = by_type
        .values()
        .flatten()
        .map(|b| b["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), got.len(), "event ids are unique");
    let q = &by_type["record.queried"][0];
    assert_eq!(q["findings"][0]["check"], "SYSBP");
    assert_eq!(q["subject"], "DEMO-001-03-0042");
    let mut alerts: Vec<&str> = by_type["alert.raised"]
        .iter()
        .map(|b| b["alert"].as_str().unwrap())
        .collect();
    alerts.sort();
    assert_eq!(alerts, vec!["HTN_CRISIS", "SAE"]);
    let done = &by_type["batch.completed"][0];
    assert_eq!(
        (
            done["accepted"].as_i64(),
            done["queried"].as_i64(),
            done["duplicates"].as_i64()
        ),
        (Some(4), Some(1), Some(1))
    );
    assert_eq!(done["dead_lettered"], json!({"invalid": 1}));
    // Order: a record's event comes before the alerts it raised.
    let pos = |pred: &dyn Fn(&Value) -> bool| got.iter().position(|m| pred(&body(m))).unwrap();
    let qid = queried["record_id"].as_str().unwrap();
    assert!(
        pos(&|b| b["type"] == "record.queried" && b["record_id"] == qid)
            < pos(&|b| b["type"] == "alert.raised" && b["record_id"] == qid)
    );
    // Never an identifier or a phi value in an event.
    let all: String = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned())
        .collect();
    for needle in [
        "Ada",
        "Lovelace",
        "1961-03-02",
        "7946",
        "MRN-778899",
        "Example Road",
        "Anaphylaxis",
    ] {
        assert!(!all.contains(needle), "an event carries {needle}");
    }
    assert_eq!(env.count("SELECT count(*) FROM alerts").await, 2);
    let receipt = env
        .db()
        .await
        .query_one(
            "SELECT accepted, queried, duplicates, dead_lettered_total, expected FROM batch_receipts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            receipt.get::<_, i32>(0),
            receipt.get::<_, i32>(1),
            receipt.get::<_, i32>(2),
            receipt.get::<_, i32>(3),
            receipt.get::<_, i32>(4)
        ),
        (4, 1, 1, 1, 7)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_message_with_reply_to_gets_its_outcome_with_its_correlation_id() {
    let env = TestEnv::new().await;
    // An allowed reply address (amqp.reply_to_allowed: edc.reply.*).
    let replies = format!("edc.reply.t{}", env.suffix);
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        ShortString::from(replies.as_str()),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    // One worker: the second copy of the good record must come after the first.
    let settings = env.settings(&[("EDC__WORKERS", "1")]);
    edc_ingest::broker::declare(&ch, &settings.amqp, &settings.retry)
        .await
        .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let good = record(vs_items());
    let mut bad = record(vs_items());
    bad["visit"] = json!("WEEK99");
    for (corr, r) in [("c-good", &good), ("c-bad", &bad), ("c-again", &good)] {
        let props = BasicProperties::default()
            .with_reply_to(ShortString::from(replies.as_str()))
            .with_correlation_id(ShortString::from(corr))
            .with_message_id(ShortString::from(corr));
        ch.basic_publish(
            ShortString::from(""),
            ShortString::from(env.queue.as_str()),
            BasicPublishOptions::default(),
            &bytes(r),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    conn.close(200, ShortString::from("bye")).await.unwrap();

    let daemon = Daemon::start(settings);
    daemon.wait_settled(3, WAIT).await;
    wait_for("three answers", WAIT, || async {
        env.ready(&replies).await == 3
    })
    .await;
    daemon.stop().await;

    let answers: HashMap<String, Value> = env
        .drain(&replies)
        .await
        .iter()
        .map(|m| {
            (
                m.delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .unwrap()
                    .as_str()
                    .to_string(),
                body(m),
            )
        })
        .collect();
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers["c-good"]["outcome"], "accepted");
    assert_eq!(answers["c-bad"]["outcome"], "dead_lettered");
    assert_eq!(answers["c-bad"]["kind"], "invalid");
    assert_eq!(answers["c-again"]["outcome"], "duplicate");
    env.delete_queue(&replies).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_refused_callback_is_parked_and_the_events_after_it_still_go_out() {
    // Arrange: one record answers into a full queue that refuses publishes, one into a reply
    // address no queue takes; a third has no reply address.
    let env = TestEnv::new().await;
    let events = env.listen_events("record.#").await;
    let full = format!("edc.reply.t{}.full", env.suffix);
    let missing = format!("edc.reply.t{}.missing", env.suffix);
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-max-length".into(),
        lapin::types::AMQPValue::LongLongInt(1),
    );
    args.insert(
        "x-overflow".into(),
        lapin::types::AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare(ShortString::from(full.as_str()), Default::default(), args)
        .await
        .unwrap();
    ch.basic_publish(
        ShortString::from(""),
        ShortString::from(full.as_str()),
        BasicPublishOptions::default(),
        b"already here",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    conn.close(200, ShortString::from("bye")).await.unwrap();
    wait_for("the reply queue to be full", WAIT, || async {
        env.ready(&full).await == 1
    })
    .await;
    let to = |reply_to: &str| {
        BasicProperties::default()
            .with_reply_to(ShortString::from(reply_to))
            .with_correlation_id(ShortString::from("c"))
    };
    env.publish_with(&bytes(&record(vs_items())), to(&full))
        .await;
    env.publish_with(&bytes(&record(vs_items())), to(&missing))
        .await;
    env.publish_with(&bytes(&record(vs_items())), BasicProperties::default())
        .await;

    // Act
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(3, WAIT).await;
    wait_for("three record events", WAIT, || async {
        env.ready(&events).await == 3
    })
    .await;
    wait_for("the outbox to be empty", WAIT, || async {
        env.count("SELECT count(*) FROM outbox").await == 0
    })
    .await;
    let parked_count = daemon.stats.events_parked.get();
    daemon.stop().await;

    // Assert: both callbacks parked with our reason; every record event went out.
    let parked: Vec<String> = env
        .db()
        .await
        .query("SELECT reason FROM outbox_parked ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert!(parked.iter().any(|r| r.contains("refused")), "{parked:?}");
    assert!(
        parked.iter().any(|r| r.contains("unroutable")),
        "{parked:?}"
    );
    assert_eq!(parked_count, 2);
    assert_eq!(env.drain(&events).await.len(), 3);
    assert_eq!(env.ready(&full).await, 1, "the full queue got nothing more");
    env.delete_queue(&full).await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_event_carries_the_trace_id_of_the_message_that_caused_it() {
    let env = TestEnv::new().await;
    let events = env.listen_events("#").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "traceparent".into(),
        lapin::types::AMQPValue::LongString(traceparent.into()),
    );
    let mut sae = record(json!({"AETERM": "Anaphylaxis", "AESER": "Y", "AESTDAT": "2026-11-20"}));
    sae["form"] = json!("AE");
    env.publish_with(
        &bytes(&sae),
        BasicProperties::default().with_headers(headers),
    )
    .await;

    let daemon = Daemon::start(env.settings(&[]));
    wait_for("the record and alert events", WAIT, || async {
        env.ready(&events).await == 2
    })
    .await;
    daemon.stop().await;

    let got = env.drain(&events).await;
    assert_eq!(got.len(), 2);
    for m in &got {
        let trace = header(m, "traceparent").expect("a traceparent on every event");
        assert_eq!(
            &trace[3..35],
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "{}",
            m.delivery.routing_key
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn with_traces_exported_the_job_is_a_child_of_the_uploaders_span_and_its_events_carry_the_job()
 {
    // Arrange: a collector, a listener on every event, a serious adverse event sent under a trace.
    let env = TestEnv::new().await;
    let collector = Collector::start().await;
    let events = env.listen_events("#").await;
    let (trace_id, uploader_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "traceparent".into(),
        lapin::types::AMQPValue::LongString(format!("00-{trace_id}-{uploader_span}-01").into()),
    );
    let mut sae = record(json!({"AETERM": "Anaphylaxis", "AESER": "Y", "AESTDAT": "2026-11-20"}));
    sae["form"] = json!("AE");
    env.publish_with(
        &bytes(&sae),
        BasicProperties::default().with_headers(headers),
    )
    .await;

    // Act: the real binary, exporting its spans; stopped, so that it flushes them.
    let endpoint = collector.endpoint();
    let daemon = run_daemon(
        &env,
        &[
            ("EDC__OTEL__ENDPOINT", &endpoint),
            ("EDC__HTTP__LISTEN", ""),
        ],
    );
    wait_for("the record and alert events", WAIT, || async {
        env.ready(&events).await == 2
    })
    .await;
    assert!(daemon.stop(WAIT).await.success());
    wait_for("the job span exported", WAIT, || async {
        collector.spans().iter().any(|s| s.name == "job")
    })
    .await;

    // Assert: the job span is a child of the uploader's span, in its trace; both events carry the
    // trace and name the job span as their parent; no attribute holds a value of the record.
    let spans = collector.spans();
    let job = spans.iter().find(|s| s.name == "job").unwrap();
    assert_eq!(hex::encode(&job.trace_id), trace_id);
    assert_eq!(hex::encode(&job.parent_span_id), uploader_span);
    let job_span = hex::encode(&job.span_id);
    for m in env.drain(&events).await {
        let tp = header(&m, "traceparent").expect("a traceparent on every event");
        assert_eq!(
            tp,
            format!("00-{trace_id}-{job_span}-01"),
            "{}",
            m.delivery.routing_key
        );
    }
    for span in &spans {
        for value in attribute_values(span) {
            for planted in [
                "Anaphylaxis",
                "Ada Lovelace",
                "1961-03-02",
                "MRN-778899",
                "ada@example.org",
            ] {
                assert!(!value.contains(planted), "span attribute {value}");
            }
        }
    }
    env.cleanup().await;
}

#[tokio::test]
async fn the_outbox_keeps_its_events_compressed_with_lz4() {
    // An outbox row holds every event of a transaction (tens of kilobytes under load), written
    // once, read once and deleted: lz4, not the default pglz, whose CPU cost more than the events
    // (V13; a server built without lz4 stores them uncompressed, and this test fails there).
    let env = TestEnv::new().await;
    let lz4 = "SELECT count(*) FROM pg_attribute
               WHERE attrelid = 'outbox'::regclass AND attname = 'events' AND attcompression = 'l'";
    assert_eq!(env.count(lz4).await, 1);
    env.cleanup().await;
}
