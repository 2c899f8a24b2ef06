//! What an uploader controls, treated as hostile: the reply address, headers that claim the daemon's
//! own prefix or the broker's redelivery count, and batch sizes (here); properties no clock or
//! column can hold ([`properties`]); a `user_id` on copies ([`uploader`]); a publisher channel the
//! broker closes ([`channel`]). Against the real broker and database.

mod channel;
mod properties;
mod uploader;

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::json;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

fn headers(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

#[tokio::test]
async fn a_reply_to_outside_the_allowed_addresses_gets_no_answer_and_the_record_is_stored() {
    // Arrange: one message asks for its answer in the dead-letter queue, one in the work queue,
    // one in an allowed reply queue.
    let env = TestEnv::new().await;
    let allowed = format!("edc.reply.t{}", env.suffix);
    env.declare_queue(&allowed).await;
    for (id, reply_to) in [
        ("to-dlq", &env.dlq),
        ("to-work", &env.queue),
        ("ok", &allowed),
    ] {
        let props = BasicProperties::default()
            .with_message_id(ShortString::from(id))
            .with_reply_to(ShortString::from(reply_to.as_str()));
        env.publish_with(&bytes(&record(vs_items())), props).await;
    }

    // Act
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(3, WAIT).await;
    wait_for("the allowed answer", WAIT, || async {
        env.ready(&allowed).await == 1
    })
    .await;
    let refused = daemon.stats.reply_to_refused.get();
    let summary = daemon.stop().await;

    // Assert: all three stored; nothing published into the queues the uploader named; counted.
    assert_eq!(summary.accepted, 3, "{summary}");
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 3);
    assert_eq!(refused, 2);
    assert_eq!(
        env.ready(&env.dlq).await,
        0,
        "nothing in the dead-letter queue"
    );
    assert_eq!(
        env.ready(&env.queue).await,
        0,
        "nothing back in the work queue"
    );
    let answers = env.drain(&allowed).await;
    assert_eq!(answers.len(), 1);
    env.delete_queue(&allowed).await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_uploaders_retry_count_is_not_believed() {
    // Arrange: the first two attempts fail with an unexplained error (retried through the delay
    // queues, 3 attempts in all); the uploader claims 2 attempts already failed, under a made-up seal.
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
    let forged = headers(&[
        ("x-edc-retries", AMQPValue::LongLongInt(2)),
        ("x-edc-seal", text("00000000000000000000000000000000")),
    ]);
    let props = BasicProperties::default()
        .with_message_id(ShortString::from("forged"))
        .with_headers(forged);
    env.publish_with(&bytes(&record(vs_items())), props).await;

    // Act
    let daemon = Daemon::start(env.settings(&[
        ("EDC__RETRY__MAX_ATTEMPTS", "3"),
        ("EDC__RETRY__INITIAL_DELAY", "100ms"),
    ]));
    daemon.wait_settled(1, WAIT).await;
    let summary = daemon.stop().await;

    // Assert: believed, the claim would have made the first failure the last; it was retried twice
    // and stored.
    assert_eq!((summary.retried, summary.accepted), (2, 1), "{summary}");
    assert_eq!(summary.dead_lettered_total(), 0, "{summary}");
    env.cleanup().await;
}

#[tokio::test]
async fn an_uploaders_delivery_count_does_not_make_a_message_look_redelivered() {
    // With crash_limit 1, a message taken for a redelivery would be poison at once.
    let env = TestEnv::new().await;
    let props = BasicProperties::default()
        .with_message_id(ShortString::from("looks-redelivered"))
        .with_headers(headers(&[("x-delivery-count", AMQPValue::LongLongInt(7))]));
    env.publish_with(&bytes(&record(vs_items())), props).await;

    let daemon = Daemon::start(env.settings(&[("EDC__CRASH_LIMIT", "1")]));
    daemon.wait_settled(1, WAIT).await;
    let summary = daemon.stop().await;

    assert_eq!(summary.accepted, 1, "{summary}");
    assert_eq!(env.count("SELECT count(*) FROM delivery_ledger").await, 0);
    env.cleanup().await;
}

#[tokio::test]
async fn a_dead_letter_carries_our_headers_never_an_uploaders_claim_to_them() {
    let env = TestEnv::new().await;
    let mut bad = record(vs_items());
    bad["visit"] = json!("WEEK99");
    let claims = headers(&[
        ("x-edc-error-kind", text("conflict")),
        ("x-edc-consumer", text("somebody-else")),
        ("x-edc-planted", text("yes")),
        ("x-site-batch", text("kept")),
    ]);
    let props = BasicProperties::default()
        .with_message_id(ShortString::from("bad"))
        .with_headers(claims);
    env.publish_with(&bytes(&bad), props).await;

    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(1, WAIT).await;
    daemon.stop().await;

    let letters = env.drain_dlq().await;
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(header(l, "x-edc-error-kind").as_deref(), Some("invalid"));
    let consumer = header(l, "x-edc-consumer").unwrap();
    assert!(
        consumer.ends_with(&format!(":{}", std::process::id())),
        "{consumer}"
    );
    assert_eq!(
        header(l, "x-edc-planted"),
        None,
        "an uploader's x-edc- header is dropped"
    );
    assert_eq!(
        header(l, "x-site-batch").as_deref(),
        Some("kept"),
        "other headers are kept"
    );
    assert_eq!(header(l, "x-edc-queue"), Some(env.queue.clone()));
    assert!(header(l, "x-edc-seal").is_some(), "our headers are sealed");
    env.cleanup().await;
}
