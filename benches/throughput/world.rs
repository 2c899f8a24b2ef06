//! One measurement's private world: its own PostgreSQL database and its own queues, named uniquely
//! (`edc_bench_<label>_<id>`, `edc.bench.<label>.<id>*`) so that tests running meanwhile are not
//! disturbed, and removed afterwards. Also the snapshot of the build under test.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, Result};
use edc_ingest::config::Settings;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};
use tokio_postgres::NoTls;

use crate::kit;

#[path = "../../tests/common/endpoints.rs"]
mod endpoints;
use endpoints::with_db;
pub use endpoints::{amqp_url, pg_url, repo};

/// The daemon binary and protocol files this run uses: copies taken at start (see [`snapshot`]).
static BUILD: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();

/// Copies the daemon binary (`CARGO_BIN_EXE_edc-ingest`, in the shared target folder, or the
/// file named by `EDC_BENCH_DAEMON`) and `config/studies` into `dir`, so that a rebuild or an edit
/// during the run cannot mix two builds.
pub fn snapshot(dir: &std::path::Path) -> Result<()> {
    let source = std::env::var_os("EDC_BENCH_DAEMON").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_edc-ingest")),
        PathBuf::from,
    );
    let binary = dir.join("edc-ingest");
    std::fs::copy(&source, &binary)
        .with_context(|| format!("copying the daemon binary {}", source.display()))?;
    let studies = dir.join("studies");
    std::fs::create_dir_all(&studies)?;
    for entry in std::fs::read_dir(repo().join("config/studies"))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), studies.join(entry.file_name()))?;
        }
    }
    let _ = BUILD.set((binary, studies));
    Ok(())
}

/// The daemon binary to run.
pub fn binary() -> PathBuf {
    BUILD.get().map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_edc-ingest")),
        |b| b.0.clone(),
    )
}

/// The study protocols (`EDC__STUDIES_DIR`, and the bench's own `pipeline::prepare`).
pub fn studies_dir() -> PathBuf {
    BUILD
        .get()
        .map_or_else(|| repo().join("config/studies"), |b| b.1.clone())
}

pub async fn amqp() -> Result<Connection> {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .context("cannot reach RabbitMQ (run scripts/bench.sh, which starts it)")
}

pub async fn pg(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .context("cannot reach PostgreSQL (run scripts/bench.sh, which starts it)")?;
    tokio::spawn(conn);
    Ok(client)
}

/// Worlds not cleaned up yet: an interrupted run (Ctrl-C) removes them on its way out.
static LIVE: Mutex<Vec<World>> = Mutex::new(Vec::new());

#[derive(Clone, Debug)]
pub struct World {
    /// Our own database, if this world has one.
    pub db_name: Option<String>,
    pub queue: String,
    pub dlx: String,
    pub dlq: String,
}

impl World {
    /// A database (migrated with the daemon's own migrations) and the daemon's queue topology.
    pub async fn full(label: &str) -> Result<World> {
        Self::create(label, true, true).await
    }

    /// Only the queue topology (the broker ceiling).
    pub async fn queues_only(label: &str) -> Result<World> {
        Self::create(label, false, true).await
    }

    /// Only a migrated database (the database ceiling).
    pub async fn db_only(label: &str) -> Result<World> {
        Self::create(label, true, false).await
    }

    async fn create(label: &str, db: bool, queues: bool) -> Result<World> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let queue = format!("edc.bench.{label}.{id}");
        let world = World {
            db_name: db.then(|| format!("edc_bench_{label}_{id}")),
            dlx: format!("{queue}.dlx"),
            dlq: format!("{queue}.dlq"),
            queue,
        };
        LIVE.lock().expect("registry").push(world.clone());
        match world.set_up(queues).await {
            Ok(()) => Ok(world),
            Err(e) => {
                world.cleanup().await;
                Err(e)
            }
        }
    }

    async fn set_up(&self, queues: bool) -> Result<()> {
        if let Some(name) = &self.db_name {
            pg(&pg_url())
                .await?
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .with_context(|| format!("CREATE DATABASE {name}"))?;
            edc_ingest::store::migrate(&self.settings().postgres).await?;
        }
        if queues {
            let conn = amqp().await?;
            let ch = conn.create_channel().await?;
            let s = self.settings();
            edc_ingest::broker::declare(&ch, &s.amqp, &s.retry).await?;
            let _ = conn.close(200, ShortString::from("declared")).await;
        }
        Ok(())
    }

    pub fn db_url(&self) -> String {
        match &self.db_name {
            Some(name) => with_db(&pg_url(), name),
            None => pg_url(),
        }
    }

    /// `EDC__*` variables pointing the daemon at this world (workers, pool and batch are added by
    /// the caller).
    pub fn env(&self) -> Vec<(String, String)> {
        let studies = studies_dir().display().to_string();
        [
            ("EDC__AMQP__URL", amqp_url()),
            ("EDC__AMQP__QUEUE", self.queue.clone()),
            ("EDC__AMQP__DEAD_LETTER_EXCHANGE", self.dlx.clone()),
            ("EDC__AMQP__DEAD_LETTER_QUEUE", self.dlq.clone()),
            ("EDC__POSTGRES__URL", self.db_url()),
            // The owner (it made the world's database), as before: allowed on purpose.
            ("EDC__POSTGRES__ALLOW_OWNER_RUNTIME", "true".into()),
            ("EDC__STUDIES_DIR", studies),
            ("EDC__DEV_INSECURE_PSEUDONYM_KEY", "true".into()),
            ("EDC__LOG__LEVEL", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(
            optional_names()
                .iter()
                .map(|(k, suffix, _)| (k.to_string(), format!("{}.{suffix}", self.queue))),
        )
        .chain(http_listen())
        .collect()
    }

    /// The daemon's settings for this world with every other key at its default (what the
    /// library's `publish` and `migrate` need).
    pub fn settings(&self) -> Settings {
        Settings::load_with_env(None, self.env()).expect("bench settings are valid")
    }

    pub async fn db(&self) -> Result<tokio_postgres::Client> {
        pg(&self.db_url()).await
    }

    /// Messages in the work queue that no consumer holds (RabbitMQ's count lags a little).
    pub async fn ready(&self) -> Result<(u32, u32)> {
        let conn = amqp().await?;
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                ShortString::from(self.queue.as_str()),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = conn.close(200, ShortString::from("bye")).await;
        Ok((q.message_count(), q.consumer_count()))
    }

    /// Deletes every queue of this world (work, dead-letter and delay queues), the dead-letter
    /// exchange and the database. Errors are reported, never fatal.
    pub async fn cleanup(&self) {
        LIVE.lock()
            .expect("registry")
            .retain(|w| w.queue != self.queue);
        if let Err(e) = self.delete_queues().await {
            eprintln!("[bench] warning: deleting queues {}*: {e:#}", self.queue);
        }
        if let Some(name) = &self.db_name
            && let Err(e) = drop_database(name).await
        {
            eprintln!("[bench] warning: dropping database {name}: {e:#}");
        }
    }

    async fn delete_queues(&self) -> Result<()> {
        let s = self.settings();
        let mut names = vec![self.queue.clone(), self.dlq.clone()];
        let mut exchanges = vec![self.dlx.clone()];
        for (_, suffix, kind) in optional_names() {
            let name = format!("{}.{suffix}", self.queue);
            match kind {
                Kind::Queue => names.push(name),
                Kind::Exchange => exchanges.push(name),
            }
        }
        for q in names.clone() {
            names.extend(edc_ingest::broker::topology::retry_queues(&q, &s.retry));
        }
        // Whatever else was declared under our prefix, and any queue dead-lettering into our
        // uniquely named exchange: a fixed-name queue of a newer build that this bench does not
        // name per world yet (it would clash between worlds). Then its delay queues too.
        let listed: Vec<(String, String)> = kit::broker::listed_queues()
            .into_iter()
            .map(|(name, arguments)| {
                let dlx = arguments["x-dead-letter-exchange"].as_str();
                (name, dlx.unwrap_or("").to_string())
            })
            .collect();
        let foreign: Vec<&String> = listed
            .iter()
            .filter(|(n, dlx)| *dlx == self.dlx && !n.starts_with(&self.queue))
            .map(|(n, _)| n)
            .collect();
        for f in &foreign {
            eprintln!(
                "[bench] warning: this build declared queue {f} (not named per bench world); deleting it and its delay queues"
            );
        }
        for (n, _) in &listed {
            let ours = n.starts_with(&self.queue)
                || foreign
                    .iter()
                    .any(|f| n == *f || n.starts_with(&format!("{f}.retry.")));
            if ours && !names.contains(n) {
                names.push(n.clone());
            }
        }
        let conn = amqp().await?;
        let deleted = kit::broker::delete(&conn, &names, &exchanges).await;
        let _ = conn.close(200, ShortString::from("cleaned up")).await;
        deleted.map_err(anyhow::Error::msg)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Queue,
    Exchange,
}

/// Name settings that only some builds have, as (variable, suffix of the world's queue name, what
/// it names). Each is passed only if this build knows it (an unknown `EDC__` key is a configuration
/// error), so that no two worlds share its fixed default name and no bench traffic reaches it.
const OPTIONAL_NAMES: [(&str, &str, Kind); 2] = [
    ("EDC__AMQP__URGENT_QUEUE", "urgent", Kind::Queue),
    ("EDC__AMQP__EVENTS_EXCHANGE", "events", Kind::Exchange),
];

fn optional_names() -> &'static [(&'static str, &'static str, Kind)] {
    static KNOWN: std::sync::OnceLock<Vec<(&str, &str, Kind)>> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| {
        OPTIONAL_NAMES
            .iter()
            .copied()
            .filter(|(key, _, _)| {
                let env = [
                    (
                        "EDC__DEV_INSECURE_PSEUDONYM_KEY".to_string(),
                        "true".to_string(),
                    ),
                    (key.to_string(), "edc.bench.probe.name".to_string()),
                ];
                Settings::load_with_env(None, env).is_ok()
            })
            .collect()
    })
}

/// The HTTP listener on a free port, on a build that has one: on as in production, and never in
/// the way of another process on the default port.
fn http_listen() -> Option<(String, String)> {
    let var = ("EDC__HTTP__LISTEN".to_string(), "127.0.0.1:0".to_string());
    let env = [
        (
            "EDC__DEV_INSECURE_PSEUDONYM_KEY".to_string(),
            "true".to_string(),
        ),
        var.clone(),
    ];
    Settings::load_with_env(None, env).is_ok().then_some(var)
}

/// `DROP DATABASE`. With FORCE first (ends our own leftover connections); FORCE fails when an
/// autovacuum worker is busy there, which our role may not signal, while a plain DROP asks
/// autovacuum to leave by itself: so a few plain attempts follow.
async fn drop_database(name: &str) -> Result<()> {
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
    Err(last.into())
}

/// Removes every world still registered (after an interruption).
pub async fn cleanup_all() {
    let left: Vec<World> = LIVE.lock().expect("registry").clone();
    for w in left {
        w.cleanup().await;
    }
}

pub use kit::broker::management;
