//! One measurement's private world, built with the test kit (`tests/common/kit/world.rs`): its own
//! PostgreSQL database and its own queues, named uniquely (`edc_bench_<label>_<id>`,
//! `edc.bench.<label>.<id>*`) so that tests running meanwhile are not disturbed, and removed
//! afterwards, after an interruption too. Also the snapshot of the build under test.

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context as _, Result};
use edc_ingest::config::Settings;
use lapin::Connection;

use crate::kit;

pub use kit::endpoints::{amqp_url, pg_url, repo};

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
    kit::world::amqp().await.map_err(anyhow::Error::msg)
}

pub async fn pg(url: &str) -> Result<tokio_postgres::Client> {
    kit::world::pg(url).await.map_err(anyhow::Error::msg)
}

/// Worlds not cleaned up yet: an interrupted run (Ctrl-C) removes them on its way out.
static LIVE: Mutex<Vec<World>> = Mutex::new(Vec::new());

/// A measurement's world: the kit's ([`kit::world::World::for_bench`]), its names readable
/// through it (`world.queue`, `world.db_url()`).
#[derive(Clone, Debug)]
pub struct World(kit::world::World);

impl Deref for World {
    type Target = kit::world::World;
    fn deref(&self) -> &kit::world::World {
        &self.0
    }
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

    /// An empty database and the daemon's queue topology: for a binary that migrates it itself
    /// (another build's, whose migrations may differ from this build's).
    pub async fn unmigrated(label: &str) -> Result<World> {
        let world = World(kit::world::World::for_bench(label, true));
        LIVE.lock().expect("registry").push(world.clone());
        let made = async {
            let name = world
                .db_name
                .as_deref()
                .context("the world has a database")?;
            pg(&pg_url())
                .await?
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .with_context(|| format!("CREATE DATABASE {name}"))?;
            world
                .0
                .declare(&world.settings())
                .await
                .map_err(anyhow::Error::msg)
        }
        .await;
        if let Err(e) = made {
            world.cleanup().await;
            return Err(e);
        }
        Ok(world)
    }

    async fn create(label: &str, db: bool, queues: bool) -> Result<World> {
        let world = World(kit::world::World::for_bench(label, db));
        LIVE.lock().expect("registry").push(world.clone());
        let settings = world.settings();
        let mut made = world.0.create_database(&settings).await;
        if queues && made.is_ok() {
            made = world.0.declare(&settings).await;
        }
        match made {
            Ok(()) => Ok(world),
            Err(e) => {
                world.cleanup().await;
                Err(anyhow::Error::msg(e))
            }
        }
    }

    /// `EDC__*` variables pointing the daemon at this world, its logs at `warn` (workers, pool and
    /// batch are added by the caller).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut vars = self.0.env(&studies_dir());
        vars.push(("EDC__LOG__LEVEL".into(), "warn".into()));
        vars
    }

    /// The daemon's settings for this world with every other key at its default (what the
    /// library's `publish` and `migrate` need).
    pub fn settings(&self) -> Settings {
        Settings::load_with_env(None, self.env()).expect("bench settings are valid")
    }

    pub async fn db(&self) -> Result<tokio_postgres::Client> {
        pg(&self.db_url()).await
    }

    /// Messages in the work queue that no consumer holds, and its consumers (RabbitMQ's count lags
    /// a little).
    pub async fn ready(&self) -> Result<(u32, u32)> {
        kit::world::ready(&self.queue)
            .await
            .map_err(anyhow::Error::msg)
    }

    /// Removes the world (see [`kit::world::World::remove`]), and any queue that dead-letters into
    /// its uniquely named exchange: a fixed-name queue of another build of the daemon
    /// (`EDC_BENCH_DAEMON`) that this bench does not name per world, with its delay queues.
    /// Errors are reported, never fatal.
    pub async fn cleanup(&self) {
        LIVE.lock()
            .expect("registry")
            .retain(|w| w.queue != self.queue);
        let listed = kit::broker::listed_queues();
        let foreign: Vec<&String> = listed
            .iter()
            .filter(|(n, arguments)| {
                arguments["x-dead-letter-exchange"].as_str() == Some(self.dlx.as_str())
                    && !n.starts_with(&self.queue)
            })
            .map(|(n, _)| n)
            .collect();
        for f in &foreign {
            eprintln!(
                "[bench] warning: this build declared queue {f} (not named per bench world); deleting it and its delay queues"
            );
        }
        let also: Vec<String> = listed
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                foreign
                    .iter()
                    .any(|f| n == f || n.starts_with(&format!("{f}.retry.")))
            })
            .cloned()
            .collect();
        if let Err(e) = self.0.remove(&self.settings(), &also).await {
            eprintln!("[bench] warning: {e}");
        }
    }
}

/// Removes every world still registered (after an interruption).
pub async fn cleanup_all() {
    let left: Vec<World> = LIVE.lock().expect("registry").clone();
    for w in left {
        w.cleanup().await;
    }
}

pub use kit::broker::management;
