//! The connections a replica opens do not grow with its workers. 64 workers (pool_size 64), one
//! committer and postgres.worker_connections 2, on a backlog where a third of the messages are
//! refused: each refusal is a rejection row its worker writes itself, through the workers' share of
//! the pool, so without the share up to 64 of them would hold a connection at once. PostgreSQL
//! never shows more of the daemon's connections than `Settings::pool_connections` (committers +
//! worker_connections + 2) plus the outbox relay's, and every message has its outcome.

use std::time::Duration;

use tokio::time::Instant;

use crate::helpers::*;

const MESSAGES: usize = 900;
const WAIT: Duration = Duration::from_secs(120);

/// The daemon's connections to this test's database now (its pool and its relay, all named
/// edc-ingest), the asking session left out.
async fn daemon_connections(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'edc-ingest'
            AND pid <> pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_opens_its_committers_and_the_workers_share_not_a_connection_per_worker() {
    let env = TestEnv::new().await;
    let lines = generated(MESSAGES, 23, 0.34, 0.05);
    env.publish_lines(&lines).await;
    let settings = env.settings(&[
        ("EDC__WORKERS", "64"),
        ("EDC__POSTGRES__POOL_SIZE", "64"),
        ("EDC__POSTGRES__WORKER_CONNECTIONS", "2"),
        ("EDC__COMMITTERS", "1"),
    ]);
    assert_eq!(
        settings.pool_connections(),
        5,
        "1 committer + 2 + gate + gauge"
    );
    let allowed = settings.pool_connections() as i64 + 1;

    let db = env.db().await;
    let daemon = Daemon::start(settings);
    let deadline = Instant::now() + WAIT;
    let (mut most, mut samples) = (0, 0);
    while daemon.stats.summary().settled() < MESSAGES as u64 {
        assert!(
            Instant::now() < deadline,
            "{} of {MESSAGES} settled in {WAIT:?}",
            daemon.stats.summary().settled()
        );
        most = most.max(daemon_connections(&db).await);
        samples += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let summary = daemon.stop().await;

    assert!(samples > 10, "the connections were sampled {samples} times");
    assert!(
        most >= 2,
        "the daemon's connections were seen (at most {most})"
    );
    assert!(
        most <= allowed,
        "the daemon held {most} connections at once; its settings allow {allowed}"
    );
    let stored = env.count("SELECT count(*) FROM crf_records").await;
    let rejected = env.count("SELECT count(*) FROM rejections").await;
    assert!(
        rejected > MESSAGES as i64 / 5,
        "a third refused: {rejected} rejection rows"
    );
    assert_eq!(stored + rejected, MESSAGES as i64, "{summary}");
    assert_eq!(summary.settled(), MESSAGES as u64, "{summary}");
    env.cleanup().await;
}

/// The start-up check says what this replica opens against what the server has left: with a
/// workers' share far beyond max_connections it warns, naming both figures and the settings to
/// change; with the defaults it only reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_says_when_the_server_has_no_room_for_the_replica() {
    let env = TestEnv::new().await;
    let mut crowded = run_daemon(
        &env,
        &[
            ("EDC__POSTGRES__POOL_SIZE", "100000"),
            ("EDC__POSTGRES__WORKER_CONNECTIONS", "99990"),
            ("EDC__WORKERS", "2"),
        ],
    );
    crowded
        .wait_output("this replica opens up to 99994", WAIT)
        .await;
    let out = crowded.output();
    assert!(out.contains("raise max_connections"), "{out}");
    assert!(out.contains("postgres.worker_connections"), "{out}");
    assert!(crowded.stop(WAIT).await.success());

    let mut roomy = run_daemon(
        &env,
        &[("EDC__WORKERS", "2"), ("EDC__POSTGRES__POOL_SIZE", "2")],
    );
    roomy
        .wait_output("PostgreSQL connections: this replica opens up to 3", WAIT)
        .await;
    assert!(!roomy.output().contains("raise max_connections"));
    assert!(roomy.stop(WAIT).await.success());
    env.cleanup().await;
}
