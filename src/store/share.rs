//! The workers' own connections. Most of a worker's records go to the committers, which hold the
//! connections that store them; a worker runs a few statements itself: a rejection row, a
//! duplicate's note, an ODM message's transaction, a record whose key another session holds, the
//! crash ledger of a redelivered message. Those borrow from the same pool through the
//! [`WorkerShare`], which lets at most `postgres.worker_connections` of them hold a connection at
//! once. So the connections a replica opens do not grow with its worker count: at most the
//! committers', the share's, and one each for the database gate's probe and the backlog gauge
//! (`Settings::pool_connections`, the size the pool is given), and the workers can never take the
//! connections the committers need.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool, PoolError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The workers' share of the pool, for their own statements: at most `permits` connections at once.
#[derive(Clone)]
pub struct WorkerShare {
    pool: Pool,
    permits: Arc<Semaphore>,
    wait: Duration,
}

/// A connection of the pool taken through the [`WorkerShare`]; its place in the share is given back
/// with it.
pub struct Borrowed {
    client: Object,
    _permit: OwnedSemaphorePermit,
}

impl WorkerShare {
    /// `wait`: how long [`WorkerShare::get`] waits for a place in the share, then for a connection
    /// (`postgres.acquire_timeout` each), before it fails like a pool that has none to give.
    pub fn new(pool: Pool, permits: usize, wait: Duration) -> WorkerShare {
        WorkerShare {
            pool,
            permits: Arc::new(Semaphore::new(permits.max(1))),
            wait,
        }
    }

    /// A connection, once one of the share's places is free. A wait past the timeout is the pool's
    /// own timeout error, which the callers already treat as the database being unavailable.
    pub async fn get(&self) -> Result<Borrowed, PoolError> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Timeout(deadpool_postgres::TimeoutType::Wait))?
            .map_err(|_| PoolError::Closed)?;
        let client = self.pool.get().await?;
        Ok(Borrowed {
            client,
            _permit: permit,
        })
    }
}

impl Deref for Borrowed {
    type Target = Object;

    fn deref(&self) -> &Object {
        &self.client
    }
}

impl DerefMut for Borrowed {
    fn deref_mut(&mut self) -> &mut Object {
        &mut self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A share of one: the second `get` waits for the first connection to be given back, and fails
    /// with the pool's timeout if it is not. No connection is ever opened: the pool points nowhere
    /// and the first place is taken by hand.
    #[tokio::test]
    async fn a_full_share_waits_then_times_out_like_the_pool() {
        let mut cfg = deadpool_postgres::Config::new();
        cfg.host = Some("127.0.0.1".into());
        cfg.port = Some(9);
        cfg.dbname = Some("none".into());
        let pool = cfg
            .create_pool(
                Some(deadpool_postgres::Runtime::Tokio1),
                tokio_postgres::NoTls,
            )
            .unwrap();
        let share = WorkerShare::new(pool, 1, Duration::from_millis(50));
        let held = share.permits.clone().acquire_owned().await.unwrap();
        assert_eq!(share.permits.available_permits(), 0);
        let started = std::time::Instant::now();
        let err = share
            .get()
            .await
            .err()
            .expect("a full share gives no connection");
        assert!(
            matches!(
                err,
                PoolError::Timeout(deadpool_postgres::TimeoutType::Wait)
            ),
            "{err:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(held);
        assert_eq!(share.permits.available_permits(), 1);
    }
}
