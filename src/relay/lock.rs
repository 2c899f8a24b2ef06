//! The relay's hold on its lock: the advisory-lock key, the bound on every statement of the lock
//! connection, and the heartbeat that checks the lock is still this session's.

use std::future::Future;
use std::time::Duration;

use super::RelayError;

/// Advisory-lock key of the relay leader ("edc_outb").
pub const RELAY_LOCK: i64 = 0x6564_635f_6f75_7462;

/// A statement on the lock connection, given at most `within`: past it the connection is taken
/// as dead.
pub(super) async fn bounded<T>(
    what: &'static str,
    within: Duration,
    statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, RelayError> {
    match tokio::time::timeout(within, statement).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(RelayError::Silent {
            what,
            after: within,
        }),
    }
}

/// The heartbeat: the lock connection answers within `within`, and its session still holds the
/// relay lock (a connection pooler in front of the server could have handed the statements to
/// another session).
pub(super) async fn still_leading(
    db: &tokio_postgres::Client,
    within: Duration,
) -> Result<(), RelayError> {
    let check = db.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_locks
                        WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                          AND objsubid = 1 AND (classid::int8 << 32 | objid::int8) = $1)",
        &[&RELAY_LOCK],
    );
    if bounded("the heartbeat", within, check).await?.get(0) {
        Ok(())
    } else {
        Err(RelayError::LockLost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_statement_that_never_answers_is_cut_at_its_bound() {
        let bound = Duration::from_millis(50);
        let never = std::future::pending::<Result<(), tokio_postgres::Error>>();
        let started = std::time::Instant::now();
        let e = bounded("the heartbeat", bound, never).await.unwrap_err();
        assert!(started.elapsed() >= bound, "{:?}", started.elapsed());
        assert!(
            matches!(e, RelayError::Silent { what: "the heartbeat", after } if after == bound),
            "{e}"
        );
        let answered = bounded("x", bound, async { Ok::<_, tokio_postgres::Error>(7) });
        assert_eq!(answered.await.unwrap(), 7);
    }
}
