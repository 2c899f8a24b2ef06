//! Running the real binary: configuration errors, prefetch, and a graceful stop under load.

use std::time::Duration;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

/// Messages settled for good, from the daemon's summary line.
fn settled_in(summary: &str) -> u64 {
    let field = |name: &str| -> u64 {
        summary_field(summary, name).unwrap_or_else(|| panic!("{name} in {summary}"))
    };
    field("accepted") + field("queried") + field("duplicate") + field("dead_lettered")
}

#[tokio::test]
async fn more_workers_than_connections_is_refused_naming_both_numbers() {
    let env = TestEnv::new().await;
    for cmd in ["check-config", "run"] {
        let out = edc(
            &env,
            &[("EDC__WORKERS", "20"), ("EDC__POSTGRES__POOL_SIZE", "4")],
            &[cmd],
        );
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("workers (20)") && err.contains("postgres.pool_size (4)"),
            "{err}"
        );
    }
    let out = edc(&env, &[("EDC__WROKERS", "2")], &["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrokers"));
    let out = edc(&env, &[], &["check-config"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.cleanup().await;
}

#[tokio::test]
async fn the_broker_sees_a_prefetch_equal_to_the_worker_count() {
    // Both lanes together: the urgent consumer holds one delivery, the normal one the rest.
    let env = TestEnv::new().await;
    let daemon =
        Daemon::start(env.settings(&[("EDC__WORKERS", "3"), ("EDC__POSTGRES__POOL_SIZE", "5")]));
    let ours = |all: &serde_json::Value| -> Vec<(String, i64)> {
        all.as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                c["queue"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(env.queue.as_str()))
            })
            .map(|c| {
                (
                    c["queue"]["name"].as_str().unwrap().to_string(),
                    c["prefetch_count"].as_i64().unwrap_or(-1),
                )
            })
            .collect()
    };
    wait_for("both consumers registered", WAIT, || async {
        ours(&management("/api/consumers")).len() == 2
    })
    .await;
    let mut consumers = ours(&management("/api/consumers"));
    consumers.sort();
    assert_eq!(
        consumers,
        vec![(env.queue.clone(), 2), (env.urgent_queue(), 1)]
    );
    let total: i64 = consumers.iter().map(|(_, p)| p).sum();
    assert_eq!(total, 3, "prefetch over both lanes == workers");
    daemon.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_with_jobs_in_flight_loses_and_duplicates_nothing() {
    // Arrange: 3,000 valid records in the queue, the real binary consuming them.
    let env = TestEnv::new().await;
    let lines = generated(3000, 42, 0.0, 0.05);
    env.publish_lines(&lines).await;
    let daemon = run_daemon(&env, &[("EDC__WORKERS", "4")]);

    // Act: stop it while it is busy
    wait_for("some records stored", WAIT, || async {
        env.count("SELECT count(*) FROM crf_records").await >= 200
    })
    .await;
    let exit = daemon.stop(WAIT).await;
    let status = (exit.status, exit.stdout);
    let stored_at_stop = env.count("SELECT count(*) FROM crf_records").await;

    // Assert: a clean exit with its summary, and work left for later
    assert_eq!(status.0.code(), Some(0), "exit status");
    assert!(
        status.1.contains("edc-ingest stopped after"),
        "summary line: {}",
        status.1
    );
    assert!(
        stored_at_stop < 3000,
        "stopped before the end ({stored_at_stop})"
    );

    // Act: a second run drains the rest
    // Every message the first run did not ack is settled by the second.
    let left = 3000 - settled_in(&status.1);
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(left, WAIT).await;
    let second = daemon.stop().await;
    assert_eq!(second.settled(), left, "{second}");
    wait_for("work queue empty", WAIT, || async {
        env.ready(&env.queue).await == 0
    })
    .await;

    // Assert: each record exactly once, each with exactly one 'created' audit row, nothing dead-lettered
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 3000);
    assert_eq!(
        env.count("SELECT count(*) FROM audit_trail WHERE action = 'created'")
            .await,
        3000
    );
    assert_eq!(env.count("SELECT count(*) FROM (SELECT record_id, version FROM audit_trail GROUP BY 1, 2 HAVING count(*) > 1) d").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM rejections").await, 0);
    assert!(env.drain_dlq().await.is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn a_multiple_ack_never_covers_a_delivery_still_in_its_job() {
    // Arrange: the first message's key held by an open transaction, so the batch holding it waits
    // in the database; 20 more behind it, which the other worker commits meanwhile, in batches whose
    // acks could be coalesced into one `multiple` ack (which would also ack the waiting batch).
    let env = TestEnv::new().await;
    let blocked = record(vs_items());
    let record_id = blocked["record_id"].as_str().unwrap();
    let holder = env.hold_key(&blocked).await;
    let ids: Vec<String> = (0..20).map(|i| format!("behind-{i}")).collect();
    let mut bodies = vec![("blocked", bytes(&blocked))];
    bodies.extend(
        ids.iter()
            .map(|id| (id.as_str(), bytes(&record(vs_items())))),
    );
    env.publish(&bodies).await;
    // Two committers: the one stuck on the held key leaves the other to commit the rest.
    let settings = [
        ("EDC__WORKERS", "2"),
        ("EDC__BATCH_SIZE", "8"),
        ("EDC__COMMITTERS", "2"),
    ];
    let daemon = run_daemon(&env, &settings);
    // The waiting batch holds at most 8 of the 21.
    wait_for(
        "the records behind the waiting batch stored",
        WAIT,
        || async { env.count("SELECT count(*) FROM crf_records").await >= 13 },
    )
    .await;
    // Their acks may wait for the earlier deliveries (up to acks::HOLD) before going out alone:
    // wait until the broker holds unacked exactly the messages not stored. (Its counts lag, but
    // only ever from above: a stale count cannot equal the stored ones' complement too early.)
    wait_for("the stored messages acked", WAIT, || async {
        let q = management(&format!("/api/queues/%2f/{}", env.queue));
        let stored = env.count("SELECT count(*) FROM crf_records").await;
        q["messages_ready"].as_i64() == Some(0)
            && q["messages_unacknowledged"].as_i64() == Some(21 - stored)
    })
    .await;

    // Act: the process dies while the first batch still waits.
    daemon.kill().await;
    let stored = env.count("SELECT count(*) FROM crf_records").await;

    // Assert: exactly the messages not stored are back in the queue: no ack covered the waiting
    // batch, and the stored ones were acked although deliveries before them never settled.
    let unstored = u32::try_from(21 - stored).unwrap();
    wait_for("the waiting batch ready again", WAIT, || async {
        env.ready(&env.queue).await == unstored
    })
    .await;
    // Once the broker has let go of the killed consumer (no consumer, nothing unacked), nothing
    // more can come back: the count above is final.
    wait_for("the killed consumer gone from the broker", WAIT, || async {
        let q = management(&format!("/api/queues/%2f/{}", env.queue));
        q["consumers"].as_i64() == Some(0) && q["messages_unacknowledged"].as_i64() == Some(0)
    })
    .await;
    assert_eq!(
        env.ready(&env.queue).await,
        unstored,
        "ready after the kill"
    );

    // Act: release the key; a new daemon stores the rest.
    holder.batch_execute("ROLLBACK").await.unwrap();
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(u64::from(unstored), WAIT).await;
    let summary = daemon.stop().await;

    // Assert: all 21 stored once, each with one audit row; nothing dead-lettered. (The killed
    // process's statement may still commit once the key is free: its backend was waiting on the
    // lock, not on the client. Then its records come back as duplicates.)
    assert_eq!(summary.settled(), u64::from(unstored), "{summary}");
    assert_eq!(summary.dead_lettered_total(), 0, "{summary}");
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 21);
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM audit_trail WHERE action = 'created' AND record_id = '{record_id}'"
        ))
        .await,
        1
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_trail WHERE action = 'created'")
            .await,
        21
    );
    assert!(env.drain_dlq().await.is_empty());
    env.cleanup().await;
}

#[tokio::test]
async fn a_database_that_refuses_the_credentials_stops_the_start_at_once() {
    let env = TestEnv::new().await;
    let mut wrong = url::Url::parse(&env.db_url).unwrap();
    wrong.set_password(Some("not-the-password")).unwrap();
    let started = std::time::Instant::now();
    let out = edc(&env, &[("EDC__POSTGRES__URL", wrong.as_str())], &["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("refused the connection"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "no retrying for ever"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn passwords_can_come_from_files_only_their_owner_can_read() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = |name: &str, password: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.display().to_string()
    };
    let mut pg = url::Url::parse(&env.db_url).unwrap();
    let pg_password = pg.password().unwrap().to_string();
    pg.set_password(None).unwrap();
    let mut broker = url::Url::parse(&amqp_url()).unwrap();
    let broker_password = broker.password().unwrap().to_string();
    broker.set_password(None).unwrap();
    let pg_file = secret_file("pg", &pg_password, 0o400);
    let broker_file = secret_file("amqp", &broker_password, 0o600);
    let from_files = [
        ("EDC__POSTGRES__URL", pg.as_str()),
        ("EDC__POSTGRES__PASSWORD_FILE", pg_file.as_str()),
        ("EDC__AMQP__URL", broker.as_str()),
        ("EDC__AMQP__PASSWORD_FILE", broker_file.as_str()),
    ];

    let migrate = edc(&env, &from_files, &["migrate"]);
    assert_eq!(
        migrate.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let mut publish = launch(&env, &from_files)
        .args(["publish", "-"])
        .stdin_piped()
        .spawn();
    use std::io::Write;
    let line = serde_json::to_string(&record(vs_items())).unwrap();
    writeln!(publish.stdin(), "{line}").unwrap();
    assert!(publish.wait_exit(WAIT).await.success());
    wait_for("the published record", WAIT, || async {
        env.ready(&env.queue).await == 1
    })
    .await;

    // A password file others can read is refused, naming the file's mode.
    let loose = secret_file("loose", &pg_password, 0o644);
    let refused = edc(
        &env,
        &[
            ("EDC__POSTGRES__URL", pg.as_str()),
            ("EDC__POSTGRES__PASSWORD_FILE", loose.as_str()),
        ],
        &["migrate"],
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("postgres.password_file") && err.contains("644"),
        "{err}"
    );
    env.cleanup().await;
}
