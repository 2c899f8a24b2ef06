//! Delivery limits, on every RabbitMQ version the tests run on (`scripts/test.sh` runs them on 3.10
//! and on 4.0). RabbitMQ 4 gives every quorum queue a delivery limit of 20 unless it declares one,
//! counts each return of a message towards it (a requeue, a closed channel, a lost connection), and
//! drops what passes it when the queue has no dead-letter exchange, as the dead-letter queue has
//! not. Dead letters are the one copy of records that could not be stored: looking at them, however
//! often, must never lose one.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// Five dead letters made by the daemon: four records from a site the protocol does not know and
/// one body that is not JSON. Returns their message ids.
async fn five_dead_letters(env: &TestEnv) -> BTreeSet<String> {
    let mut bodies: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            let mut r = record(vs_items());
            r["site"] = json!("SITE-09");
            (format!("dead-{i}"), bytes(&r))
        })
        .collect();
    bodies.push(("dead-4".into(), b"{not json, Ada Lovelace".to_vec()));
    env.publish(&bodies).await;
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(5, WAIT).await;
    daemon.stop().await;
    bodies.into_iter().map(|(id, _)| id).collect()
}

/// The message ids in the dead-letter queue, taken out for good.
async fn dead_letter_ids(env: &TestEnv) -> Vec<String> {
    env.drain_dlq()
        .await
        .iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .map_or("-".into(), |id| id.to_string())
        })
        .collect()
}

#[tokio::test]
async fn looking_at_the_dead_letters_fifty_times_loses_none() {
    // Arrange: the dead-letter queue as every earlier release declared it (an existing
    // deployment's), and five dead letters in it
    let env = TestEnv::new().await;
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        env.dlq.as_str().into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    let ids = five_dead_letters(&env).await;

    // Act: `dlq list` and `dlq show`, alternately, 50 times, as an operator would
    for run in 1..=50 {
        let (args, seen): (&[&str], fn(&str) -> usize) = if run % 2 == 1 {
            (&["dlq", "list"], |out| {
                usize::from(out.contains("5 dead letters in")) * 5
            })
        } else {
            (&["dlq", "show", "--count", "10"], |out| {
                out.matches("--- message_id").count()
            })
        };
        let out = edc(&env, &[], args);
        let shown = text(&out);
        assert!(out.status.success(), "run {run} {args:?}: {shown}");
        // Assert: every run sees all five
        assert_eq!(
            seen(&shown),
            5,
            "run {run} {args:?} saw fewer than 5: {shown}"
        );
    }

    // Assert: the queue still holds each of them, once
    let mut left = dead_letter_ids(&env).await;
    left.sort();
    assert_eq!(left, ids.into_iter().collect::<Vec<_>>());
    env.cleanup().await;
}

#[tokio::test]
async fn a_purge_abandoned_at_its_prompt_loses_no_dead_letter() {
    // Arrange: five dead letters, four of them `invalid`
    let env = TestEnv::new().await;
    let ids = five_dead_letters(&env).await;

    // Act: 25 times, `dlq purge --kind invalid` is killed while it asks for confirmation
    for run in 1..=25 {
        // Its stdin a pipe that stays open: the prompt waits for an answer.
        let mut purge = launch(&env, &[])
            .name(format!("dlq purge, run {run}"))
            .args(["dlq", "purge", "--kind", "invalid"])
            .stdin_piped()
            .spawn();
        let _stdin = purge.stdin();
        purge.wait_output("Type yes:", WAIT).await;
        let prompt = purge.stderr();
        assert!(
            prompt.contains("purge 4 dead letters of kind invalid"),
            "run {run}: {prompt}"
        );
        purge.kill().await;
    }

    // Assert: nothing was lost, and a purge confirmed with --yes still removes exactly the four
    let list = text(&edc(&env, &[], &["dlq", "list"]));
    assert!(list.contains("5 dead letters in"), "{list}");
    let purged = text(&edc(
        &env,
        &[],
        &[
            "dlq", "purge", "--kind", "invalid", "--yes", "--actor", "dm-jane",
        ],
    ));
    assert!(purged.contains("purged 4"), "{purged}");
    let left = dead_letter_ids(&env).await;
    assert_eq!(left, vec!["dead-4".to_string()]);
    assert!(ids.contains("dead-4"));
    env.cleanup().await;
}

/// Runs the real daemon until `done` holds, starting it again whenever it dies (a supervisor's
/// job), then stops it with SIGTERM. Returns how many times it died.
async fn run_with_restarts<F, Fut>(
    env: &TestEnv,
    extra: &[(&str, &str)],
    what: &str,
    done: F,
) -> u32
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (crashes, daemon) = kit::process::supervise(
        || run_daemon(env, extra),
        what,
        Duration::from_secs(120),
        done,
    )
    .await;
    if let Some(daemon) = daemon {
        assert!(
            daemon.stop(WAIT).await.success(),
            "the daemon stops cleanly"
        );
    }
    crashes
}

/// A record that aborts the process that handles it (`fault-injection` builds only).
fn crasher() -> Vec<u8> {
    let mut r = record(vs_items());
    r["entered_by"] = json!(edc_ingest::fault::ABORT_MARKER);
    bytes(&r)
}

#[tokio::test]
async fn past_its_delivery_limit_the_broker_dead_letters_a_message_that_kills_the_daemon() {
    // Arrange: a crash limit above the work queue's delivery limit, so that the broker's backstop
    // acts before the daemon's own count does
    let env = TestEnv::new().await;
    let cfg: &[(&str, &str)] = &[
        ("EDC__AMQP__DELIVERY_LIMIT", "2"),
        ("EDC__CRASH_LIMIT", "10"),
    ];
    env.publish_declared(cfg, &[("crasher", crasher())]).await;

    // Act: the daemon, restarted each time the message kills it
    let crashes = run_with_restarts(&env, cfg, "the crasher dead-lettered", || async {
        env.ready(&env.dlq).await == 1
    })
    .await;

    // Assert: delivered limit + 1 times, then dead-lettered by the broker, body intact
    assert_eq!(crashes, 3, "deliveries before the broker's backstop");
    let list = text(&edc(&env, cfg, &["dlq", "list"]));
    assert!(list.contains("1  broker:delivery_limit"), "{list}");
    let letters = env.drain_dlq().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].delivery.data, crasher_body(&letters[0]));
    assert_eq!(
        header(&letters[0], "x-first-death-reason").as_deref(),
        Some("delivery_limit")
    );
    assert_eq!(env.count("SELECT count(*) FROM rejections").await, 0);
    env.cleanup().await;
}

/// The body of a dead letter, checked to be a crasher's (each crasher has its own record id).
fn crasher_body(m: &lapin::message::BasicGetMessage) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
    assert_eq!(v["entered_by"], json!(edc_ingest::fault::ABORT_MARKER));
    m.delivery.data.clone()
}

#[tokio::test]
async fn a_message_that_kills_the_daemon_is_poison_after_exactly_crash_limit_crashes() {
    // Arrange: the default limits (crash_limit 3, the work queue's delivery limit 20)
    let env = TestEnv::new().await;
    env.publish(&[("crasher", crasher())]).await;

    // Act
    let crashes = run_with_restarts(&env, &[], "the crasher rejected as poison", || async {
        env.count("SELECT count(*) FROM rejections WHERE kind = 'poison'")
            .await
            == 1
    })
    .await;

    // Assert: dead-lettered by the daemon without a fourth run, as `poison`
    assert_eq!(crashes, env.settings(&[]).crash_limit);
    let letters = env.drain_dlq().await;
    assert_eq!(letters.len(), 1);
    crasher_body(&letters[0]);
    assert_eq!(
        header(&letters[0], "x-edc-error-kind").as_deref(),
        Some("poison")
    );
    assert_eq!(
        header(&letters[0], "x-edc-attempts").as_deref(),
        Some("LongLongInt(3)")
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_delay_queue_never_drops_a_message_at_its_delivery_limit() {
    // Arrange: one message parked in the first delay queue, with a delay far beyond the test
    let env = TestEnv::new().await;
    let cfg: &[(&str, &str)] = &[
        ("EDC__RETRY__INITIAL_DELAY", "10m"),
        ("EDC__RETRY__MAX_DELAY", "10m"),
    ];
    let settings = env.settings(cfg);
    let delay_queue =
        edc_ingest::broker::topology::retry_queues(&env.queue, &settings.retry)[0].clone();
    env.publish_declared::<&str>(cfg, &[]).await;
    let body = bytes(&record(vs_items()));
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let confirm = ch
        .basic_publish(
            "".into(),
            delay_queue.as_str().into(),
            Default::default(),
            &body,
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());

    // Act: taken and requeued 25 times (RabbitMQ 4 counts each towards the default limit of 20)
    let mut returns = 0;
    while returns < 25 {
        let Some(m) = ch
            .basic_get(delay_queue.as_str().into(), Default::default())
            .await
            .unwrap()
        else {
            break;
        };
        m.delivery
            .acker
            .nack(lapin::options::BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .unwrap();
        returns += 1;
    }
    conn.close(200, "bye".into()).await.unwrap();

    // Assert: the message is in the delay queue still, or was dead-lettered to its work queue,
    // where it was going anyway; exactly once
    let deadline = tokio::time::Instant::now() + WAIT;
    let found = loop {
        let mut found = Vec::new();
        for q in [&delay_queue, &env.queue] {
            found.extend(env.drain(q).await.into_iter().map(|m| (q.clone(), m)));
        }
        if !found.is_empty() {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message is in neither the delay nor the work queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1.delivery.data, body);
    println!(
        "RabbitMQ {}: a delay queue message returned {returns} times ended in {}",
        broker_version(),
        found[0].0
    );
    for q in [&delay_queue, &env.queue] {
        assert!(env.drain(q).await.is_empty(), "one copy only");
    }
    env.cleanup().await;
}

/// A TCP proxy for one connection to the broker; aborting the returned task closes both sockets
/// without a word, as the kernel does for a process killed with its connection open.
async fn killable_connection() -> (lapin::Connection, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = amqp_url();
    let broker = url
        .split_once('@')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("host:port in the AMQP URL")
        .to_string();
    let proxy = tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut server = tokio::net::TcpStream::connect(broker).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    let via = url.replacen(
        url.split_once('@').unwrap().1.split('/').next().unwrap(),
        &format!("127.0.0.1:{port}"),
        1,
    );
    let conn = lapin::Connection::connect(&via, Default::default())
        .await
        .unwrap();
    (conn, proxy)
}

#[tokio::test]
async fn readers_killed_while_holding_dead_letters_lose_none_with_the_documented_settings() {
    // Arrange: five dead letters; on RabbitMQ 4, the README's policy for the dead-letter queue
    let env = TestEnv::new().await;
    let ids = five_dead_letters(&env).await;
    let version = broker_version();
    let policy = format!("edc-dlq-t{}", env.suffix);
    let queue_path = format!("/api/queues/%2f/{}", env.dlq);
    if !version.starts_with("3.") {
        let (status, body) = management_request(
            "PUT",
            &format!("/api/policies/%2f/{policy}"),
            Some(&json!({
                "pattern": format!("^{}$", env.dlq.replace('.', "\\.")),
                "definition": {"delivery-limit": -1},
                "apply-to": "queues",
            })),
        );
        assert!(status.contains(" 20"), "{status} {body}");
        wait_for("the policy in force", WAIT, || async {
            management(&queue_path)["delivery_limit"] == json!("unlimited")
        })
        .await;
    }

    // Act: 25 times, a reader takes all five without acking, then dies
    let mut last_count = None;
    for round in 1..=25 {
        let (conn, proxy) = killable_connection().await;
        let ch = conn.create_channel().await.unwrap();
        let mut held = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while held.len() < 5 {
            // The five come back as soon as the broker has seen the previous reader go.
            match ch
                .basic_get(env.dlq.as_str().into(), Default::default())
                .await
                .unwrap()
            {
                Some(m) => held.push(m),
                None => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "round {round}: only {} of 5 dead letters left",
                        held.len()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        last_count = header(&held[0], "x-delivery-count");
        proxy.abort();
        let _ = proxy.await;
        drop((ch, conn));
    }

    // Assert: all five are still there
    println!("RabbitMQ {version}: x-delivery-count after 24 returns: {last_count:?}");
    let mut left = dead_letter_ids(&env).await;
    left.sort();
    assert_eq!(left, ids.into_iter().collect::<Vec<_>>());
    if !version.starts_with("3.") {
        management_request("DELETE", &format!("/api/policies/%2f/{policy}"), None);
    }
    env.cleanup().await;
}
