//! The server ends what the daemon gave up on: every connection of the daemon's pool carries
//! `statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout`, and a start waits
//! for another replica's migrations at most `postgres.migration_lock_timeout`.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn every_connection_of_the_pool_has_the_timeouts_and_the_server_enforces_them() {
    let env = TestEnv::new().await;
    let settings = env.settings(&[
        ("EDC__POSTGRES__STATEMENT_TIMEOUT", "300ms"),
        ("EDC__POSTGRES__LOCK_TIMEOUT", "200ms"),
        ("EDC__POSTGRES__IDLE_IN_TRANSACTION_TIMEOUT", "400ms"),
    ]);
    let pool = edc_ingest::store::pool(&settings.postgres).unwrap();
    let client = pool.get().await.unwrap();
    for (name, expected) in [
        ("statement_timeout", "300ms"),
        ("lock_timeout", "200ms"),
        ("idle_in_transaction_session_timeout", "400ms"),
    ] {
        let shown: String = client
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(shown, expected, "{name}");
    }

    // A statement past its timeout is ended by the server, not left running.
    let started = Instant::now();
    let e = client.execute("SELECT pg_sleep(5)", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::QUERY_CANCELED), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A lock held elsewhere is waited for at most lock_timeout.
    let holder = env.db().await;
    holder
        .batch_execute("BEGIN; LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let e = client
        .execute("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::LOCK_NOT_AVAILABLE), "{e}");
    holder.batch_execute("ROLLBACK").await.unwrap();

    // A transaction left idle is ended by the server: the session is gone.
    // Watched from another session: any statement on the idle one would restart its clock.
    let idle = pool.get().await.unwrap();
    let pid: i32 = idle
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    idle.batch_execute("BEGIN").await.unwrap();
    let watcher = env.db().await;
    wait_for(
        "the server ends the idle transaction's session",
        WAIT,
        || {
            let watcher = &watcher;
            async move {
                let n: i64 = watcher
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                        &[&pid],
                    )
                    .await
                    .unwrap()
                    .get(0);
                n == 0
            }
        },
    )
    .await;
    assert!(idle.batch_execute("SELECT 1").await.is_err());
    drop(idle);
    drop(client);
    pool.close();
    env.cleanup().await;
}

#[tokio::test]
async fn a_migration_waits_for_another_replicas_lock_at_most_migration_lock_timeout() {
    let env = TestEnv::new().await;
    // Another replica migrating: its advisory lock (per database) held by this session.
    let other = env.db().await;
    other
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&edc_ingest::store::MIGRATION_LOCK],
        )
        .await
        .unwrap();
    let started = Instant::now();
    let out = edc(
        &env,
        &[("EDC__POSTGRES__MIGRATION_LOCK_TIMEOUT", "1s")],
        &["migrate"],
    );
    let took = started.elapsed();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("postgres.migration_lock_timeout"), "{said}");
    assert!(took < Duration::from_secs(15), "{took:?}");

    // Once the other is done, the same command migrates.
    other
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&edc_ingest::store::MIGRATION_LOCK],
        )
        .await
        .unwrap();
    let out = edc(
        &env,
        &[("EDC__POSTGRES__MIGRATION_LOCK_TIMEOUT", "1s")],
        &["migrate"],
    );
    assert!(out.status.success(), "{}", text(&out));
    env.cleanup().await;
}
