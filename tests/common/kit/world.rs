//! A private world: its own PostgreSQL database (migrated with the daemon's own migrations) and its
//! own queue and exchange names, each carrying one unique mark, so that tests and measurements
//! running at the same time never meet; the variables that point the daemon at it; and its removal.
//!
//! The integration tests and the chaos suite build theirs with [`World::for_test`] (wrapped by
//! `TestEnv` in `tests/it/helpers.rs`), the benchmark with [`World::for_bench`] (wrapped in
//! `benches/throughput/world.rs`). Failures come back as text: the tests panic with it, the
//! benchmark reports it.

use std::path::Path;
use std::time::Duration;

use edc_ingest::config::Settings;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};
use tokio_postgres::NoTls;

use super::broker;
use super::endpoints::{amqp_url, pg_url, with_db};

/// The names of one world.
#[derive(Clone, Debug)]
pub struct World {
    /// In every queue and exchange name of the world, and nowhere else: what finds the queues a
    /// test or a daemon declared under it (`t<12 hex digits>` for a test, the work queue's name
    /// for a measurement).
    pub mark: String,
    /// Its own database, if it has one (a measurement of the broker alone has none).
    pub db_name: Option<String>,
    pub queue: String,
    pub urgent_queue: String,
    pub events_exchange: String,
    pub dlx: String,
    pub dlq: String,
}

/// `len` random hex digits.
fn unique(len: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..len].to_string()
}

impl World {
    /// A test's names: database `edc_test_<id>`, work queue `edc.records.t<id>`, dead letters on
    /// `edc.dlx.t<id>` and `edc.records.dlq.t<id>`, events on `edc.events.t<id>`.
    pub fn for_test() -> World {
        let id = unique(12);
        let queue = format!("edc.records.t{id}");
        World {
            db_name: Some(format!("edc_test_{id}")),
            urgent_queue: format!("{queue}.urgent"),
            events_exchange: format!("edc.events.t{id}"),
            dlx: format!("edc.dlx.t{id}"),
            dlq: format!("edc.records.dlq.t{id}"),
            queue,
            mark: format!("t{id}"),
        }
    }

    /// A measurement's names: database `edc_bench_<label>_<id>` (if `db`), and every queue and
    /// exchange under `edc.bench.<label>.<id>`.
    pub fn for_bench(label: &str, db: bool) -> World {
        let id = unique(10);
        let queue = format!("edc.bench.{label}.{id}");
        World {
            db_name: db.then(|| format!("edc_bench_{label}_{id}")),
            urgent_queue: format!("{queue}.urgent"),
            events_exchange: format!("{queue}.events"),
            dlx: format!("{queue}.dlx"),
            dlq: format!("{queue}.dlq"),
            mark: queue.clone(),
            queue,
        }
    }

    /// The world's database, or the shared one if it has none.
    pub fn db_url(&self) -> String {
        match &self.db_name {
            Some(name) => with_db(&pg_url(), name),
            None => pg_url(),
        }
    }

    /// The `EDC__*` variables that point the daemon at this world and at nothing else: its broker
    /// names, its database (as its owner, which made it: allowed on purpose), the study protocols
    /// in `studies`, the development key, and the HTTP listener on a free port (daemons of
    /// parallel tests never share one). A user adds or replaces the rest (workers, timeouts ...).
    pub fn env(&self, studies: &Path) -> Vec<(String, String)> {
        [
            ("EDC__AMQP__URL", amqp_url()),
            ("EDC__AMQP__QUEUE", self.queue.clone()),
            ("EDC__AMQP__URGENT_QUEUE", self.urgent_queue.clone()),
            ("EDC__AMQP__EVENTS_EXCHANGE", self.events_exchange.clone()),
            ("EDC__AMQP__DEAD_LETTER_EXCHANGE", self.dlx.clone()),
            ("EDC__AMQP__DEAD_LETTER_QUEUE", self.dlq.clone()),
            ("EDC__POSTGRES__URL", self.db_url()),
            ("EDC__POSTGRES__ALLOW_OWNER_RUNTIME", "true".into()),
            ("EDC__STUDIES_DIR", studies.display().to_string()),
            ("EDC__DEV_INSECURE_PSEUDONYM_KEY", "true".into()),
            ("EDC__HTTP__LISTEN", "127.0.0.1:0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Creates the world's database (if it has one) and applies the migrations to it with
    /// `settings` (the daemon migrates at start too; doing it here lets a user query the tables
    /// at once).
    pub async fn create_database(&self, settings: &Settings) -> Result<(), String> {
        let Some(name) = &self.db_name else {
            return Ok(());
        };
        pg(&pg_url())
            .await?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        edc_ingest::store::migrate(&settings.postgres)
            .await
            .map(|_| ())
            .map_err(|e| format!("migrating {name}: {e}"))
    }

    /// Declares the queues and exchanges the daemon declares with `settings`.
    pub async fn declare(&self, settings: &Settings) -> Result<(), String> {
        let conn = amqp().await?;
        let declared = async {
            let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
            edc_ingest::broker::declare(&ch, &settings.amqp, &settings.retry)
                .await
                .map_err(|e| format!("declaring the queues of {}: {e}", self.mark))
        }
        .await;
        let _ = conn.close(200, ShortString::from("declared")).await;
        declared
    }

    /// Removes the world: the queues the daemon declares with `settings` (work, urgent, their delay
    /// queues, dead-letter), `also`, every queue the broker lists under the mark, the exchanges
    /// the daemon declares, and the database. Every part is tried; the first failure is returned.
    pub async fn remove(&self, settings: &Settings, also: &[String]) -> Result<(), String> {
        let mut queues = broker::daemon_queues(settings);
        queues.extend(also.iter().cloned());
        queues.extend(broker::queues_marked(&self.mark));
        let exchanges = broker::daemon_exchanges(settings);
        let queues_deleted = match amqp().await {
            Ok(conn) => {
                let deleted = broker::delete(&conn, &queues, &exchanges).await;
                let _ = conn.close(200, ShortString::from("cleaned up")).await;
                deleted.map_err(|e| format!("deleting the queues of {}: {e}", self.mark))
            }
            Err(e) => Err(e),
        };
        let db_dropped = match &self.db_name {
            Some(name) => drop_database(name)
                .await
                .map_err(|e| format!("dropping database {name}: {e}")),
            None => Ok(()),
        };
        queues_deleted.and(db_dropped)
    }
}

/// A connection to the local broker.
pub async fn amqp() -> Result<Connection, String> {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot reach RabbitMQ (scripts/services.sh starts it): {e}"))
}

/// A connection to the local PostgreSQL at `url`, driven by a task of its own.
pub async fn pg(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("cannot reach PostgreSQL (scripts/services.sh starts it): {e}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// A queue's ready messages and consumers (a passive declare; quorum queue counts lag about a
/// second behind: wait for a value rather than read it once).
pub async fn ready(queue: &str) -> Result<(u32, u32), String> {
    let conn = amqp().await?;
    let declared = async {
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        ch.queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("queue {queue}: {e}"))
    }
    .await;
    let _ = conn.close(200, ShortString::from("bye")).await;
    declared.map(|q| (q.message_count(), q.consumer_count()))
}

/// `DROP DATABASE`. With FORCE first (ends leftover connections); FORCE fails when an autovacuum
/// worker is busy there, which our role may not signal, while a plain DROP asks autovacuum to
/// leave by itself: so a few plain attempts follow, a second apart.
pub async fn drop_database(name: &str) -> Result<(), String> {
    let admin = pg(&pg_url()).await?;
    let mut last = match admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last.to_string())
}
