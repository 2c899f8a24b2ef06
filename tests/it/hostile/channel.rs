//! A publisher channel the broker closes (here: the dead-letter exchange deleted under the daemon,
//! a 404 on the next dead letter) replaces the whole session at once, topology included, instead of
//! every later copy failing on a dead channel.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use serde_json::json;

use super::WAIT;
use crate::helpers::*;

#[tokio::test]
async fn a_closed_publisher_channel_replaces_the_session_and_the_dead_letter_goes_out_once() {
    // Arrange: a daemon consuming, then its dead-letter exchange deleted.
    let env = TestEnv::new().await;
    env.publish(&[("first", bytes(&record(vs_items())))]).await;
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(1, WAIT).await;
    let sessions = daemon.stats.broker_sessions.get();
    let conn = amqp().await;
    kit::broker::delete(&conn, &[], std::slice::from_ref(&env.dlx))
        .await
        .expect("the dead-letter exchange deleted");
    let _ = conn.close(200, ShortString::from("bye")).await;

    // Act: an invalid record, whose dead letter meets the missing exchange.
    let mut bad = record(vs_items());
    bad["visit"] = json!("WEEK99");
    // (Published without declaring the topology, as the helpers do: that would bring it back.)
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let props = BasicProperties::default().with_message_id(ShortString::from("bad"));
    let confirm = ch
        .basic_publish(
            ShortString::from(""),
            ShortString::from(env.queue.as_str()),
            BasicPublishOptions::default(),
            &bytes(&bad),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    let _ = conn.close(200, ShortString::from("bye")).await;
    daemon.wait_settled(2, Duration::from_secs(10)).await;
    let replaced = daemon.stats.broker_sessions.get() - sessions;
    let summary = daemon.stop().await;

    // Assert: a new session, the exchange declared again, the dead letter ours and only one.
    assert!(replaced >= 1, "the session was replaced ({summary})");
    assert_eq!(summary.dead_lettered_total(), 1, "{summary}");
    assert_eq!(env.count("SELECT count(*) FROM rejections").await, 1);
    let letters = env.drain_dlq().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(
        header(&letters[0], "x-edc-error-kind").as_deref(),
        Some("invalid")
    );
    env.cleanup().await;
}
