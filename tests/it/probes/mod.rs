//! The HTTP listener of the real binary: `/metrics` against the database under load, `/readyz` and
//! `/livez` through start-up, a database outage and a drain, and `edc-ingest healthcheck`.

use std::time::Duration;

use tokio_postgres::NoTls;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

mod commands;
mod labels;

use commands::{healthcheck, publish_with_the_tool};
pub use labels::assert_labels_bounded;

async fn status_of(port: u16, path: &str) -> Option<u16> {
    http_get(port, path).await.map(|(status, _)| status)
}

#[tokio::test]
async fn a_scrape_under_load_agrees_with_the_database() {
    // Arrange: 2,000 generated records (some invalid, some queried) and 50 valid ones sent twice
    // under other message ids (duplicates), all waiting; a queue that receives every event.
    let env = TestEnv::new().await;
    let events = env.listen_events("#").await;
    let lines = generated(2000, 11, 0.03, 0.05);
    publish_with_the_tool(&env, &lines).await;
    let twice = generated(50, 12, 0.0, 0.0);
    for round in ["first", "again"] {
        let bodies: Vec<(String, Vec<u8>)> = twice
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("{round}-{i}"), l.clone().into_bytes()))
            .collect();
        env.publish(&bodies).await;
    }
    let published = 2100;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let daemon = run_daemon(&env, &[("EDC__HTTP__LISTEN", &listen)]);

    // Act: scrape while the daemon drains the backlog
    let settled = |m: &Metrics| -> i64 {
        ["accepted", "queried", "duplicate", "dead_lettered"]
            .iter()
            .map(|o| m.count(&format!(r#"edc_messages_total{{outcome="{o}"}}"#)))
            .sum()
    };
    wait_for("the listener answers", WAIT, || async {
        http_get(port, "/metrics").await.is_some()
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut scrapes, mut busy_seen, mut ready_seen, mut last_settled) = (0, false, false, 0);
    let last = loop {
        let m = scrape(port).await;
        scrapes += 1;
        let now = settled(&m);
        assert!(now >= last_settled, "counters never go down");
        last_settled = now;
        busy_seen |= m.count("edc_workers_busy") > 0
            || m.count(r#"edc_deliveries_in_flight{lane="normal"}"#) > 0;
        ready_seen |= m.count("edc_ready") == 1;
        assert_labels_bounded(&m);
        if now == published {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "settled {now} of {published}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Assert: the counters are what the database holds
    assert!(scrapes >= 5, "scraped under load ({scrapes} scrapes)");
    assert!(busy_seen, "a scrape saw work in flight");
    assert!(ready_seen, "ready while consuming");
    let db = env.db().await;
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let accepted = count("SELECT count(*) FROM crf_records WHERE status = 'accepted'").await;
    let queried = count("SELECT count(*) FROM crf_records WHERE status = 'queried'").await;
    let rejected = count("SELECT count(*) FROM rejections").await;
    assert!(
        accepted > 1700 && queried > 40 && rejected > 20,
        "{accepted} {queried} {rejected}"
    );
    assert_eq!(
        last.count(r#"edc_records_stored_total{status="accepted"}"#),
        accepted
    );
    assert_eq!(
        last.count(r#"edc_records_stored_total{status="queried"}"#),
        queried
    );
    assert_eq!(
        last.count(r#"edc_messages_total{outcome="accepted"}"#),
        accepted
    );
    assert_eq!(
        last.count(r#"edc_messages_total{outcome="queried"}"#),
        queried
    );
    assert_eq!(
        last.count(r#"edc_messages_total{outcome="dead_lettered"}"#),
        rejected
    );
    assert_eq!(last.count(r#"edc_messages_total{outcome="duplicate"}"#), 50);
    for kind in [
        "malformed",
        "too_large",
        "invalid",
        "conflict",
        "panic",
        "failed",
        "poison",
    ] {
        let in_db: i64 = db
            .query_one("SELECT count(*) FROM rejections WHERE kind = $1", &[&kind])
            .await
            .unwrap()
            .get(0);
        let series = format!(r#"edc_dead_letters_total{{kind="{kind}"}}"#);
        assert_eq!(last.count(&series), in_db, "{kind}");
    }
    for outcome in ["postponed", "retried", "requeued"] {
        let series = format!(r#"edc_messages_total{{outcome="{outcome}"}}"#);
        assert_eq!(last.count(&series), 0, "{outcome}");
    }
    // Every record went through one statement (the duplicates too: the statement tells them).
    let transactions = last.count("edc_commit_group_size_count");
    assert_eq!(
        last.count("edc_commit_group_size_sum"),
        accepted + queried + 50
    );
    assert!(transactions >= 1 && transactions <= accepted + queried + 50);
    // Publish to commit: the records `edc-ingest publish` stamped, stored now; not the 50 sent by
    // this test's own publisher, which stamps nothing.
    assert_eq!(
        last.count("edc_publish_to_commit_seconds_count"),
        accepted + queried - 50
    );
    assert!(last.get("edc_publish_to_commit_seconds_sum") > Some(0.0));
    assert!(last.count("edc_job_duration_seconds_count") >= 1);
    assert_eq!(last.count("edc_workers"), 4);
    // pool_size 8 is the cap; the pool opens 1 committer + 4 for the workers + gate + gauge.
    assert_eq!(last.count("edc_pool_size"), 7);
    assert_eq!(last.count("edc_broker_sessions_total"), 1);
    assert_eq!(last.count("edc_db_gate_open"), 1);

    // Assert: every event published is counted, and the gauges read from the database follow it
    wait_for("every event published and counted", WAIT, || async {
        let m = scrape(port).await;
        let published = m.count(r#"edc_events_published_total{kind="event"}"#);
        count("SELECT count(*) FROM outbox").await == 0
            && i64::from(env.ready(&events).await) == published
            && m.count("edc_outbox_backlog") == 0
            && m.get("edc_relay_lag_seconds") == Some(0.0)
    })
    .await;
    let open_batches =
        count("SELECT count(*) FROM batches WHERE completed_at IS NULL AND expected IS NOT NULL")
            .await;
    wait_for("edc_batches_open read from the database", WAIT, || async {
        scrape(port).await.count("edc_batches_open") == open_batches
    })
    .await;
    let m = scrape(port).await;
    assert!(m.count(r#"edc_events_published_total{kind="event"}"#) >= accepted + queried);
    assert_eq!(m.count(r#"edc_events_published_total{kind="callback"}"#), 0);

    // Act: stop it; Assert: the summary line says what the metrics said
    let exit = daemon.stop(WAIT).await;
    let (code, out) = (exit.code(), exit.stdout);
    assert_eq!(code, Some(0));
    for (field, series) in [
        ("accepted", r#"edc_messages_total{outcome="accepted"}"#),
        ("queried", r#"edc_messages_total{outcome="queried"}"#),
        ("duplicate", r#"edc_messages_total{outcome="duplicate"}"#),
        (
            "dead_lettered",
            r#"edc_messages_total{outcome="dead_lettered"}"#,
        ),
    ] {
        assert_eq!(
            summary_field(&out, field).map(|n| n as i64),
            Some(m.count(series)),
            "{field} in {out}"
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn readyz_is_503_while_draining_and_livez_stays_200() {
    // Arrange: a record whose key an open transaction holds, so its job waits in the database
    let env = TestEnv::new().await;
    let blocked = record(vs_items());
    let holder = env.hold_key(&blocked).await;
    env.publish(&[("blocked", bytes(&blocked))]).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = run_daemon(&env, &[("EDC__HTTP__LISTEN", &listen)]);
    daemon.wait_ready(WAIT).await;
    wait_for("the job waiting in the database", WAIT, || async {
        let m = scrape(port).await;
        m.count("edc_workers_busy") == 1
            && m.count(r#"edc_deliveries_in_flight{lane="normal"}"#) == 1
    })
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let ok = healthcheck(&["--url", &url("/readyz")], &[]).await;
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");

    // Act: SIGTERM with the job in flight
    daemon.signal(Signal::Term);

    // Assert: not ready (draining), still alive, metrics still served; the healthcheck says so
    wait_for("/readyz 503 while draining", WAIT, || async {
        http_get(port, "/readyz").await
            == Some((503, "not ready: draining after a shutdown signal\n".into()))
    })
    .await;
    assert_eq!(http_get(port, "/livez").await, Some((200, "ok\n".into())));
    let m = scrape(port).await;
    assert_eq!(m.count("edc_ready"), 0);
    assert_eq!(m.count("edc_workers_busy"), 1, "the job is still in flight");
    let live = healthcheck(&["--url", &url("/livez")], &[]).await;
    assert_eq!(live.status.code(), Some(0), "{live:?}");
    let ready = healthcheck(&["--url", &url("/readyz")], &[]).await;
    assert_eq!(ready.status.code(), Some(1), "{ready:?}");
    assert!(String::from_utf8_lossy(&ready.stderr).contains("503 not ready: draining"));
    // Its default URL follows http.listen, and no other setting matters to it: none given here is
    // valid for `run` (no key, more workers than connections, an unknown key).
    let vars = [
        ("EDC__HTTP__LISTEN", listen.as_str()),
        ("EDC__WORKERS", "100"),
        ("EDC__NO_SUCH_KEY", "1"),
    ];
    let default = healthcheck(&[], &vars).await;
    assert_eq!(default.status.code(), Some(0), "{default:?}");
    assert!(String::from_utf8_lossy(&default.stdout).contains(&format!("{listen}/livez: 200 ok")));

    // Act: release the key; the job commits and the daemon exits
    holder.batch_execute("ROLLBACK").await.unwrap();
    let exit = daemon.wait_exit(WAIT).await;
    let (code, out) = (exit.code(), exit.stdout);

    // Assert: a clean stop that stored the record; afterwards nothing answers
    assert_eq!(code, Some(0));
    assert_eq!(summary_field(&out, "accepted"), Some(1), "{out}");
    assert_eq!(status_of(port, "/livez").await, None);
    let gone = healthcheck(&["--url", &url("/livez")], &[]).await;
    assert_eq!(gone.status.code(), Some(1), "{gone:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn readyz_is_503_while_the_database_gate_is_closed() {
    // Arrange: the real binary, consuming
    let env = TestEnv::new().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = run_daemon(&env, &[("EDC__HTTP__LISTEN", &listen)]);
    daemon.wait_ready(WAIT).await;

    // Act: this test's database refuses connections (SQLSTATE 53300, an outage; the shared server
    // and the other tests' databases are untouched), and a record arrives
    let (admin, conn) = tokio_postgres::connect(&pg_url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    let db = &env.db_name;
    admin
        .batch_execute(&format!("ALTER DATABASE {db} CONNECTION LIMIT 0"))
        .await
        .unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[db],
        )
        .await
        .unwrap();
    env.publish(&[("during", bytes(&record(vs_items())))]).await;

    // Assert: the gate closes; not ready, still alive
    wait_for("/readyz 503 with the gate closed", WAIT, || async {
        http_get(port, "/readyz").await
            == Some((503, "not ready: the database gate is closed\n".into()))
    })
    .await;
    assert_eq!(status_of(port, "/livez").await, Some(200));
    let m = scrape(port).await;
    assert_eq!(m.count("edc_db_gate_open"), 0);
    assert_eq!(m.count("edc_ready"), 0);
    assert_eq!(m.count("edc_broker_connected"), 1);
    wait_for("closed time counted during the outage", WAIT, || async {
        scrape(port).await.get("edc_db_gate_closed_seconds_total") > Some(0.5)
    })
    .await;

    // Act: the database accepts connections again
    admin
        .batch_execute(&format!("ALTER DATABASE {db} CONNECTION LIMIT -1"))
        .await
        .unwrap();

    // Assert: ready again, and the record is stored once, after being postponed
    wait_for("/readyz 200 again", WAIT, || async {
        status_of(port, "/readyz").await == Some(200)
    })
    .await;
    wait_for("the record stored", WAIT, || async {
        env.count("SELECT count(*) FROM crf_records").await == 1
    })
    .await;
    let m = scrape(port).await;
    assert_eq!(m.count("edc_db_gate_open"), 1);
    assert!(m.count(r#"edc_messages_total{outcome="postponed"}"#) >= 1);
    wait_for("the record counted", WAIT, || async {
        scrape(port)
            .await
            .count(r#"edc_messages_total{outcome="accepted"}"#)
            == 1
    })
    .await;
    assert_eq!(daemon.stop(WAIT).await.code(), Some(0));
    env.cleanup().await;
}

#[tokio::test]
async fn livez_answers_while_migrations_wait_and_the_broker_is_unreachable() {
    // Arrange: a database that takes no connections yet (as one still starting up or full: an
    // outage to wait for, unlike one that refuses us), a broker port nothing listens on
    let env = TestEnv::new().await;
    let late = format!("{}_late", env.db_name);
    let late_url = env.db_url.replace(&env.db_name, &late);
    let (admin, conn) = tokio_postgres::connect(&pg_url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE DATABASE {late} CONNECTION LIMIT 0"))
        .await
        .unwrap();
    let broker = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let daemon = run_daemon(
        &env,
        &[
            ("EDC__HTTP__LISTEN", &listen),
            ("EDC__POSTGRES__URL", &late_url),
            ("EDC__AMQP__URL", &broker),
            ("EDC__AMQP__RECONNECT_MAX", "500ms"),
        ],
    );

    // Assert: alive and not ready while the migrations wait for the database
    wait_for("/livez during start-up", WAIT, || async {
        status_of(port, "/livez").await == Some(200)
    })
    .await;
    assert_eq!(
        http_get(port, "/readyz").await,
        Some((503, "not ready: not connected to the broker\n".into()))
    );

    // Act: the database takes connections; the daemon migrates and tries the broker, again and again
    admin
        .batch_execute(&format!("ALTER DATABASE {late} CONNECTION LIMIT -1"))
        .await
        .unwrap();
    wait_for("reconnect attempts counted", WAIT, || async {
        scrape(port).await.count("edc_broker_reconnects_total") >= 2
    })
    .await;

    // Assert: still alive, still not ready, never connected
    assert_eq!(status_of(port, "/livez").await, Some(200));
    let m = scrape(port).await;
    assert_eq!(m.count("edc_broker_connected"), 0);
    assert_eq!(m.count("edc_broker_sessions_total"), 0);
    assert_eq!(m.count("edc_ready"), 0);
    assert_eq!(status_of(port, "/readyz").await, Some(503));
    assert_eq!(daemon.stop(WAIT).await.code(), Some(0));
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {late} WITH (FORCE)"))
        .await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_port_already_taken_is_a_setup_error() {
    let env = TestEnv::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let out = edc(&env, &[("EDC__HTTP__LISTEN", &listen)], &["run"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("http.listen {listen}: cannot listen there")),
        "{err}"
    );
    let out = edc(
        &env,
        &[("EDC__HTTP__LISTEN", "localhost:9090")],
        &["check-config"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.listen"));
    env.cleanup().await;
}
