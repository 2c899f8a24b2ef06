//! What the dlq tools trust. A dead letter the broker makes itself (past the work queue's delivery
//! limit) keeps every header its uploader set, `x-edc-*` ones included, so the tools believe only
//! the evidence: a dead letter is edc-ingest's own when its `rejections` row (body hash and message
//! id) says so, and then its kind, reason and expiry come from that row. Forged headers can neither
//! relabel a dead letter (and so steer `purge --kind`), nor send a replay into another queue, nor
//! make a dead letter expire when it is looked at; and an uploader's `user_id` never reaches a copy
//! the tools publish, which RabbitMQ would refuse from any other user.

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// The work queue's delivery limit in these tests: the broker dead-letters a message at its third
/// return. Every command is given it, since a queue's declaration must match.
const LIMIT: (&str, &str) = ("EDC__AMQP__DELIVERY_LIMIT", "2");

/// Headers an uploader forges to pass for edc-ingest's own.
fn forged(kind: &str, queue: &str) -> FieldTable {
    let mut h = FieldTable::default();
    for (k, v) in [
        ("x-edc-error-kind", kind),
        ("x-edc-error", "site is not one of study DEMO-001's sites"),
        ("x-edc-queue", queue),
        ("x-edc-expires-at", "2001-01-01T00:00:00.000Z"),
        ("x-edc-attempts", "1"),
        ("x-edc-consumer", "forged:1"),
    ] {
        h.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    h
}

/// Publishes `body` to the work queue over `url` (as its user), then takes and returns it until the
/// broker dead-letters it past the delivery limit, as a consumer that keeps failing would.
async fn past_the_delivery_limit(
    env: &TestEnv,
    cfg: &[(&str, &str)],
    url: &str,
    body: &[u8],
    props: BasicProperties,
) {
    env.publish_declared::<&str>(cfg, &[]).await;
    let uploader = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = uploader.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let confirm = ch
        .basic_publish(
            "".into(),
            env.queue.as_str().into(),
            Default::default(),
            body,
            props.with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "the broker took the uploader's message");
    uploader.close(200, "bye".into()).await.unwrap();

    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut returns = 0;
    loop {
        let got = ch
            .basic_get(env.queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap();
        match got {
            Some(m) => {
                let nack = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                m.delivery.acker.nack(nack).await.unwrap();
                returns += 1;
            }
            None if returns > 2 => break,
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        assert!(tokio::time::Instant::now() < deadline, "{returns} returns");
    }
    conn.close(200, "bye".into()).await.unwrap();
}

/// `dlq show --output json`: one object per dead letter.
fn shown(env: &TestEnv, cfg: &[(&str, &str)]) -> Vec<Value> {
    let out = edc(
        env,
        cfg,
        &["dlq", "show", "--count", "10", "--output", "json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The message's `x-edc-*` headers, by name.
fn ours(m: &lapin::message::BasicGetMessage) -> Vec<String> {
    let headers = m.delivery.properties.headers().clone().unwrap_or_default();
    headers
        .inner()
        .keys()
        .map(|k| k.to_string())
        .filter(|k| k.starts_with("x-edc-"))
        .collect()
}

#[tokio::test]
async fn forged_headers_on_a_broker_dead_letter_neither_label_it_nor_expire_it_nor_route_its_replay()
 {
    // Arrange: a record with forged x-edc-* headers (kind conflict, another queue, an expiry long
    // past), dead-lettered by the broker past the delivery limit
    let env = TestEnv::new().await;
    let cfg = &[LIMIT];
    let elsewhere = format!("{}.elsewhere", env.queue);
    env.declare_queue(&elsewhere).await;
    let body = bytes(&record(vs_items()));
    let props = BasicProperties::default()
        .with_message_id(ShortString::from("forged"))
        .with_headers(forged("conflict", &elsewhere));
    past_the_delivery_limit(&env, cfg, &amqp_url(), &body, props).await;
    wait_for("the broker's dead letter", WAIT, || async {
        env.ready(&env.dlq).await == 1
    })
    .await;

    // Act and assert: listed as the broker's
    let list = edc(&env, cfg, &["dlq", "list", "--output", "json"]);
    assert!(list.status.success(), "{}", text(&list));
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["matching"], json!(1), "{list}");
    let kinds = &list["by_kind_and_reason"];
    assert_eq!(kinds[0]["kind"], json!("broker:delivery_limit"), "{list}");
    assert_eq!(kinds[0]["reason"], json!("dead-lettered by the broker"));

    // shown twice: the forged expiry did not make it vanish, and is not shown as ours
    for look in 1..=2 {
        let letters = shown(&env, cfg);
        assert_eq!(letters.len(), 1, "look {look}: {letters:?}");
        let l = &letters[0];
        assert_eq!(l["kind"], json!("broker:delivery_limit"), "{l}");
        assert_eq!(l["expires_at"], Value::Null, "{l}");
        assert_eq!(l["attempts"], Value::Null, "{l}");
        assert_eq!(l["consumer"], Value::Null, "{l}");
        assert_eq!(l["queue"], json!(env.queue), "{l}");
        assert_eq!(
            l["unverified_headers"]["x-edc-error-kind"],
            json!("conflict"),
            "{l}"
        );
    }

    // a purge of the forged kind does not take it
    let purge = edc(
        &env,
        cfg,
        &[
            "dlq", "purge", "--kind", "conflict", "--yes", "--actor", "t",
        ],
    );
    assert!(purge.status.success(), "{}", text(&purge));
    assert!(text(&purge).contains("nothing purged"), "{}", text(&purge));
    assert_eq!(env.count("SELECT count(*) FROM dlq_actions").await, 0);

    // replayed to the work queue, bare of every forged header and of any expiry
    let replay = edc(&env, cfg, &["dlq", "replay", "--actor", "dm-jane"]);
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("forged [broker:delivery_limit] would be stored"),
        "{}",
        text(&replay)
    );
    assert!(
        text(&replay).contains("replayed 1 of 1"),
        "{}",
        text(&replay)
    );
    let replayed = env.drain(&env.queue).await;
    assert_eq!(replayed.len(), 1);
    let p = &replayed[0].delivery.properties;
    assert_eq!(replayed[0].delivery.data, body);
    assert_eq!(p.expiration(), &None);
    assert_eq!(p.user_id(), &None);
    assert_eq!(ours(&replayed[0]), ["x-edc-replayed-by"]);
    for h in ["x-death", "x-first-death-reason"] {
        assert_eq!(header(&replayed[0], h), None, "{h}");
    }
    // The broker's count of this delivery (3.10 sets it on every one), not the dead letter's.
    let count = header(&replayed[0], "x-delivery-count");
    assert!(
        matches!(count.as_deref(), None | Some("LongLongInt(0)")),
        "{count:?}"
    );
    assert!(env.drain(&elsewhere).await.is_empty(), "nothing elsewhere");
    assert!(
        env.drain_dlq().await.is_empty(),
        "the dead letter was removed"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn our_own_dead_letter_keeps_its_kind_reason_and_expiry_next_to_a_forged_one() {
    // Arrange: with a TTL, one record dead-lettered by the daemon as invalid; and one dead-lettered
    // by the broker, claiming the same kind and reason in forged headers
    let env = TestEnv::new().await;
    let cfg = &[LIMIT, ("EDC__AMQP__DEAD_LETTER_TTL", "1h")];
    let mut bad = record(vs_items());
    bad["site"] = json!("SITE-04");
    env.publish_declared(cfg, &[("ours", bytes(&bad))]).await;
    let daemon = Daemon::start(env.settings(cfg));
    daemon.wait_settled(1, WAIT).await;
    daemon.stop().await;
    let props = BasicProperties::default()
        .with_message_id(ShortString::from("forged"))
        .with_headers(forged("invalid", &env.queue));
    let other = bytes(&record(vs_items()));
    past_the_delivery_limit(&env, cfg, &amqp_url(), &other, props).await;
    wait_for("both dead letters", WAIT, || async {
        env.ready(&env.dlq).await == 2
    })
    .await;
    let row = env
        .db()
        .await
        .query_one(
            "SELECT rejected_at, consumer FROM rejections WHERE message_id = 'ours'",
            &[],
        )
        .await
        .unwrap();
    let rejected_at: chrono::DateTime<chrono::Utc> = row.get(0);
    let consumer: String = row.get(1);
    let ends = rejected_at + chrono::Duration::hours(1);

    // Act and assert: one of each kind
    let list = edc(&env, cfg, &["dlq", "list"]);
    let said = text(&list);
    assert!(list.status.success(), "{said}");
    assert!(
        said.contains("1  invalid: site is not one of study DEMO-001's sites\n")
            && said.contains("1  broker:delivery_limit: dead-lettered by the broker\n"),
        "{said}"
    );

    // shown twice: ours from its row, its end kept; the other with none
    for look in 1..=2 {
        let letters = shown(&env, cfg);
        assert_eq!(letters.len(), 2, "look {look}: {letters:?}");
        let by_id = |id: &str| {
            letters
                .iter()
                .find(|l| l["message_id"] == json!(id))
                .unwrap_or_else(|| panic!("{id} in {letters:?}"))
                .clone()
        };
        let o = by_id("ours");
        assert_eq!(o["kind"], json!("invalid"), "{o}");
        assert_eq!(
            o["reason"],
            json!("site is not one of study DEMO-001's sites")
        );
        assert_eq!(o["attempts"], json!(1), "{o}");
        assert_eq!(o["consumer"], json!(consumer), "{o}");
        let at = |k: &str| chrono::DateTime::parse_from_rfc3339(o[k].as_str().unwrap()).unwrap();
        assert_eq!(at("failed_at"), rejected_at, "{o}");
        assert_eq!(at("expires_at"), ends, "{o}");
        assert_eq!(o["unverified_headers"], Value::Null, "{o}");
        let f = by_id("forged");
        assert_eq!(f["kind"], json!("broker:delivery_limit"), "{f}");
        assert_eq!(f["expires_at"], Value::Null, "{f}");
    }
    let letters = env.drain_dlq().await;
    assert_eq!(letters.len(), 2);
    for l in &letters {
        let id = l.delivery.properties.message_id().clone().unwrap();
        let expiration = l.delivery.properties.expiration().clone();
        if id.as_str() == "ours" {
            // What was left of the hour when it was last put back: never a fresh hour.
            let left: i64 = expiration.unwrap().as_str().parse().unwrap();
            let most = (ends - chrono::Utc::now()).num_milliseconds() + 60_000;
            assert!(left > 0 && left <= most.min(3_600_000), "{left} ms left");
        } else {
            assert_eq!(expiration, None, "the broker's dead letter has no expiry");
        }
    }
    env.cleanup().await;
}

/// A RabbitMQ user of its own for one test (management API), removed when dropped.
struct Uploader {
    name: String,
    url: String,
}

impl Uploader {
    fn new(suffix: &str) -> Uploader {
        let name = format!("edc-uploader-t{suffix}");
        let password = uuid::Uuid::new_v4().simple().to_string();
        let (status, body) = management_request(
            "PUT",
            &format!("/api/users/{name}"),
            Some(&json!({"password": password, "tags": ""})),
        );
        assert!(status.contains(" 20"), "{status} {body}");
        let (status, body) = management_request(
            "PUT",
            &format!("/api/permissions/%2f/{name}"),
            Some(&json!({"configure": "", "write": ".*", "read": ""})),
        );
        assert!(status.contains(" 20"), "{status} {body}");
        let url = amqp_url().replacen("guest:guest@", &format!("{name}:{password}@"), 1);
        assert_ne!(url, amqp_url(), "the test broker's URL names guest");
        Uploader { name, url }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        management_request("DELETE", &format!("/api/users/{}", self.name), None);
    }
}

#[tokio::test]
async fn a_dead_letter_with_an_uploaders_user_id_is_looked_at_and_replayed_by_another_user() {
    // Arrange: a record published by a user of its own, with its validated user_id, and
    // dead-lettered by the broker
    let env = TestEnv::new().await;
    let cfg = &[LIMIT];
    let uploader = Uploader::new(&env.suffix);
    let body = bytes(&record(vs_items()));
    let props = BasicProperties::default()
        .with_message_id(ShortString::from("from-uploader"))
        .with_user_id(ShortString::from(uploader.name.as_str()));
    past_the_delivery_limit(&env, cfg, &uploader.url, &body, props).await;
    wait_for("the broker's dead letter", WAIT, || async {
        env.ready(&env.dlq).await == 1
    })
    .await;

    // Act and assert: shown twice by the tools, logged in as guest: put back each time
    for look in 1..=2 {
        let letters = shown(&env, cfg);
        assert_eq!(letters.len(), 1, "look {look}: {letters:?}");
        assert_eq!(letters[0]["message_id"], json!("from-uploader"));
    }

    // replayed, without the uploader's user_id
    let replay = edc(&env, cfg, &["dlq", "replay", "--actor", "dm-jane"]);
    assert!(replay.status.success(), "{}", text(&replay));
    assert!(
        text(&replay).contains("replayed 1 of 1"),
        "{}",
        text(&replay)
    );
    let replayed = env.drain(&env.queue).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].delivery.data, body);
    assert_eq!(replayed[0].delivery.properties.user_id(), &None);
    assert!(
        env.drain_dlq().await.is_empty(),
        "the dead letter was removed"
    );
    drop(uploader);
    env.cleanup().await;
}

#[tokio::test]
async fn without_the_database_every_dlq_command_says_why_and_takes_nothing() {
    // Arrange: a dead letter, and a database address nothing answers at
    let env = TestEnv::new().await;
    let body = bytes(&record(vs_items()));
    let props = BasicProperties::default().with_message_id(ShortString::from("waiting"));
    past_the_delivery_limit(&env, &[LIMIT], &amqp_url(), &body, props).await;
    wait_for("the broker's dead letter", WAIT, || async {
        env.ready(&env.dlq).await == 1
    })
    .await;
    let nowhere = format!("postgres://edc:edc@127.0.0.1:{}/edc", free_port());
    let cfg = &[LIMIT, ("EDC__POSTGRES__URL", nowhere.as_str())];

    for args in [
        &["dlq", "list"][..],
        &["dlq", "show"],
        &["dlq", "replay", "--dry-run"],
        &["dlq", "purge", "--kind", "broker:delivery_limit", "--yes"],
    ] {
        // Act
        let out = edc(&env, cfg, args);

        // Assert: refused, saying why, with nothing printed on stdout
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            said.contains("cannot reach PostgreSQL") && said.contains("need the database"),
            "{args:?}: {said}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out));
    }
    let left = env.drain_dlq().await;
    assert_eq!(left.len(), 1, "the dead letter was never taken");
    let count = header(&left[0], "x-delivery-count");
    assert!(
        matches!(count.as_deref(), None | Some("LongLongInt(0)")),
        "never returned: {count:?}"
    );
    env.cleanup().await;
}
