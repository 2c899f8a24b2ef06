//! An uploader that publishes as its own RabbitMQ user with `user_id` set: the broker vouches for
//! the name on the uploader's message and refuses it on anyone else's, so no copy the daemon
//! publishes may carry it. The name travels on our copies as a sealed header instead.

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;

use super::{headers, text};
use crate::helpers::*;

/// Dead letters by edc-ingest arrive within seconds, not after the broker's delivery limit.
const SOON: Duration = Duration::from_secs(15);

/// A RabbitMQ user of the test's own, with every permission on the default vhost; deleted on drop.
struct BrokerUser {
    name: String,
}

impl BrokerUser {
    fn create(suffix: &str) -> BrokerUser {
        let name = format!("edc-uploader-{suffix}");
        let user = BrokerUser { name };
        let (status, body) = management_request(
            "PUT",
            &format!("/api/users/{}", user.name),
            Some(&json!({"password": user.name, "tags": ""})),
        );
        assert!(status.contains(" 20"), "creating the user: {status} {body}");
        let (status, body) = management_request(
            "PUT",
            &format!("/api/permissions/%2f/{}", user.name),
            Some(&json!({"configure": ".*", "write": ".*", "read": ".*"})),
        );
        assert!(status.contains(" 20"), "its permissions: {status} {body}");
        user
    }

    async fn connect(&self) -> Connection {
        let url = amqp_url();
        let ours = url.replacen("guest:guest@", &format!("{0}:{0}@", self.name), 1);
        assert_ne!(ours, url, "the test broker URL logs in as guest");
        Connection::connect(&ours, ConnectionProperties::default())
            .await
            .expect("the uploader's own connection")
    }

    /// Properties that say who publishes, as the broker checks them.
    fn props(&self, message_id: &str) -> BasicProperties {
        BasicProperties::default()
            .with_message_id(ShortString::from(message_id))
            .with_user_id(ShortString::from(self.name.as_str()))
            .with_expiration(ShortString::from("600000"))
            .with_headers(headers(&[
                ("x-edc-planted", text("yes")),
                ("x-edc-uploaded-by", text("mallory")),
            ]))
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        management_request("DELETE", &format!("/api/users/{}", self.name), None);
    }
}

/// Publishes each (body, properties) to `queue` as this connection's user, confirmed.
async fn publish_as(conn: &Connection, queue: &str, messages: &[(Vec<u8>, BasicProperties)]) {
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (body, props) in messages {
        let confirm = ch
            .basic_publish(
                ShortString::from(""),
                ShortString::from(queue),
                BasicPublishOptions::default(),
                body,
                props.clone().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "the broker took the uploader's message");
    }
}

/// The messages ready in `queue` now, each taken and given back (the channel closes unacked).
async fn peek(queue: &str) -> Vec<BasicProperties> {
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        out.push(m.delivery.properties.clone());
    }
    let _ = conn.close(200, ShortString::from("peeked")).await;
    out
}

fn invalid() -> Vec<u8> {
    let mut bad = record(vs_items());
    bad["visit"] = json!("WEEK99");
    bytes(&bad)
}

#[tokio::test]
async fn an_uploaders_invalid_records_are_dead_lettered_by_us_at_once_without_its_user_id() {
    // Arrange: three invalid records from an uploader publishing as itself with user_id set; a
    // fourth from another uploader (no user_id) that claims the first's name in our header.
    let env = TestEnv::new().await;
    let uploader = BrokerUser::create(&env.suffix);
    env.publish_declared(&[], &[] as &[(&str, Vec<u8>)]).await; // declares the topology
    let conn = uploader.connect().await;
    let theirs: Vec<_> = (1..=3)
        .map(|i| (invalid(), uploader.props(&format!("inv-{i}"))))
        .collect();
    publish_as(&conn, &env.queue, &theirs).await;
    let _ = conn.close(200, ShortString::from("bye")).await;
    let claim = headers(&[("x-edc-uploaded-by", text(&uploader.name))]);
    let props = BasicProperties::default()
        .with_message_id(ShortString::from("claims"))
        .with_headers(claim);
    env.publish_with(&invalid(), props).await;

    // Act
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(4, SOON).await;
    let summary = daemon.stop().await;

    // Assert: each dead-lettered once, by us; nothing given back.
    assert_eq!(summary.dead_lettered_total(), 4, "{summary}");
    assert_eq!(summary.requeued, 0, "{summary}");
    assert_eq!(env.count("SELECT count(*) FROM rejections").await, 4);
    let letters = env.drain_dlq().await;
    assert_eq!(letters.len(), 4);
    for l in &letters {
        let p = &l.delivery.properties;
        let id = p.message_id().as_ref().map_or("", |m| m.as_str());
        assert_eq!(
            header(l, "x-edc-error-kind").as_deref(),
            Some("invalid"),
            "{id}"
        );
        assert_eq!(p.user_id(), &None, "{id}");
        assert_eq!(p.expiration(), &None, "{id}");
        assert_eq!(header(l, "x-edc-planted"), None, "{id}");
        let by = header(l, "x-edc-uploaded-by");
        if id.starts_with("inv-") {
            assert_eq!(by.as_deref(), Some(uploader.name.as_str()), "{id}");
        } else {
            assert_eq!(by, None, "{id}: an unsealed claim is not believed");
        }
    }
    env.cleanup().await;
}

#[tokio::test]
async fn retry_and_postpone_copies_carry_no_user_id_and_the_uploader_survives_the_round_trip() {
    // Arrange: the uploader's record `retried` always meets an internal error (retried once, then
    // dead-lettered); `postponed` meets an outage once (postponed, then stored).
    let env = TestEnv::new().await;
    env.db()
        .await
        .batch_execute(
            "CREATE SEQUENCE outage;
             CREATE FUNCTION hostile_insert() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.message_id = 'retried' THEN
                 RAISE EXCEPTION 'simulated internal error' USING ERRCODE = 'XX000';
               END IF;
               IF NEW.message_id = 'postponed' AND nextval('outage') = 1 THEN
                 RAISE EXCEPTION 'simulated outage' USING ERRCODE = '53100';
               END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER hostile_insert BEFORE INSERT ON crf_records
               FOR EACH ROW EXECUTE FUNCTION hostile_insert();",
        )
        .await
        .unwrap();
    let uploader = BrokerUser::create(&env.suffix);
    let settings = [
        ("EDC__RETRY__MAX_ATTEMPTS", "2"),
        ("EDC__RETRY__INITIAL_DELAY", "3s"),
    ];
    env.publish_declared(&settings, &[] as &[(&str, Vec<u8>)])
        .await;
    let conn = uploader.connect().await;
    let messages = [
        (bytes(&record(vs_items())), uploader.props("retried")),
        (bytes(&record(vs_items())), uploader.props("postponed")),
    ];
    publish_as(&conn, &env.queue, &messages).await;
    let _ = conn.close(200, ShortString::from("bye")).await;

    // Act: watch the delay queue for a retry copy and a postpone copy.
    let daemon = Daemon::start(env.settings(&settings));
    let delay_queue = format!("{}.retry.3000ms", env.queue);
    let mut copies: Vec<BasicProperties> = Vec::new();
    let seen = |copies: &[BasicProperties], id: &str, retry: bool| {
        copies.iter().any(|p| {
            p.message_id().as_ref().map(|m| m.as_str()) == Some(id)
                && has(p, "x-edc-retry-reason") == retry
        })
    };
    let deadline = tokio::time::Instant::now() + SOON;
    while !(seen(&copies, "retried", true) && seen(&copies, "postponed", false)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "copies seen: {copies:?}"
        );
        copies.extend(peek(&delay_queue).await);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    daemon.wait_settled(2, SOON).await;
    let summary = daemon.stop().await;

    // Assert: no copy carries the uploader's user_id, expiration or x-edc- headers; each carries
    // its name under our seal; after the round trip the dead letter still names the uploader.
    for p in &copies {
        assert_eq!(p.user_id(), &None, "{p:?}");
        assert_eq!(p.expiration(), &None, "{p:?}");
        assert!(!has(p, "x-edc-planted"), "{p:?}");
        assert!(has(p, "x-edc-seal"), "{p:?}");
        let by = p
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .get("x-edc-uploaded-by");
        assert_eq!(by, Some(&text(&uploader.name)), "{p:?}");
    }
    assert_eq!((summary.accepted, summary.retried), (1, 1), "{summary}");
    assert!(summary.postponed >= 1, "{summary}");
    let letters = env.drain_dlq().await;
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(header(l, "x-edc-error-kind").as_deref(), Some("failed"));
    assert_eq!(
        header(l, "x-edc-attempts").as_deref(),
        Some("LongLongInt(2)")
    );
    assert_eq!(
        header(l, "x-edc-uploaded-by").as_deref(),
        Some(uploader.name.as_str())
    );
    assert_eq!(l.delivery.properties.user_id(), &None);
    env.cleanup().await;
}

fn has(p: &BasicProperties, name: &str) -> bool {
    p.headers()
        .as_ref()
        .is_some_and(|h| h.inner().contains_key(name))
}
