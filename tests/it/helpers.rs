//! Test harness: a fresh database and fresh queues per test ([`TestEnv`], over the shared kit's
//! world in `tests/common/kit`), the daemon in-process (or its binary, through the kit), and
//! bounded waits instead of sleeps.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edc_ingest::config::Settings;
use edc_ingest::stats::{Stats, Summary};
use lapin::Connection;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

#[path = "../common/kit/mod.rs"]
pub mod kit;
#[allow(unused_imports)] // the chaos suite includes this file and uses fewer
pub use kit::endpoints::{amqp_url, amqps_url, pg_runtime_url, pg_url, repo, tls_dir};
#[path = "../common/summary.rs"]
mod summary;
#[allow(unused_imports)] // the chaos suite includes this file and uses fewer
pub use kit::process::{DaemonProcess, Exit, Launch, Signal};
pub use kit::wait::wait_for;
pub use summary::summary_field;
#[path = "metrics.rs"]
mod metrics;
#[allow(unused_imports)] // the chaos suite includes this file and uses fewer
pub use metrics::{Metrics, scrape};
#[path = "helpers/broker.rs"]
mod broker;
#[allow(unused_imports)] // the chaos suite includes this file and uses fewer
pub use broker::{broker_version, header, management, management_request};
#[path = "helpers/records.rs"]
mod records;
#[allow(unused_imports)] // the chaos suite includes this file and uses fewer
pub use records::{bytes, generated, record, vs_items};
#[path = "collector.rs"]
mod collector;
#[allow(unused_imports)] // the chaos suite includes this file and uses fewer
pub use collector::{Collector, attribute_values};

/// The daemon binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_edc-ingest");

/// How long a one-shot command ([`edc`]) may run.
pub const COMMAND_WAIT: Duration = Duration::from_secs(120);

/// One test's world: its own database and queue names (the kit's [`kit::world::World`], whose
/// names are copied into the fields tests read).
pub struct TestEnv {
    pub suffix: String,
    pub db_url: String,
    pub db_name: String,
    pub queue: String,
    pub dlx: String,
    pub dlq: String,
    /// Queues this test declared itself (event listeners, reply queues), removed by `cleanup`.
    made: Mutex<Vec<String>>,
    world: kit::world::World,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        let world = kit::world::World::for_test();
        let env = TestEnv {
            suffix: world.mark["t".len()..].to_string(),
            db_url: world.db_url(),
            db_name: world
                .db_name
                .clone()
                .expect("a test's world has a database"),
            queue: world.queue.clone(),
            dlx: world.dlx.clone(),
            dlq: world.dlq.clone(),
            made: Mutex::new(Vec::new()),
            world,
        };
        env.world
            .create_database(&env.settings(&[]))
            .await
            .unwrap_or_else(|e| panic!("{e} (run scripts/test.sh)"));
        env
    }

    /// The fast lane of this test's world.
    pub fn urgent_queue(&self) -> String {
        self.world.urgent_queue.clone()
    }

    /// The events exchange of this test's world.
    pub fn events_exchange(&self) -> String {
        self.world.events_exchange.clone()
    }

    /// The environment variables that point the daemon at this test's world: the kit's (the
    /// database as its owner, allowed on purpose: a test that runs as the runtime login `edc_app`
    /// or checks the refusal sets its own; the HTTP listener on a free port: a test that asks it
    /// sets a port it knows, see `free_port`), 4 workers, 10 s timeouts, then `extra`.
    pub fn env_vars(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars = self.world.env(&repo().join("config/studies"));
        vars.extend(
            [
                ("EDC__POSTGRES__POOL_SIZE", "8"),
                ("EDC__WORKERS", "4"),
                ("EDC__SHUTDOWN_GRACE", "10s"),
                ("EDC__JOB_TIMEOUT", "10s"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        for (k, v) in extra {
            vars.retain(|(name, _)| name != k);
            vars.push((k.to_string(), v.to_string()));
        }
        vars
    }

    pub fn settings(&self, extra: &[(&str, &str)]) -> Settings {
        Settings::load_with_env(None, self.env_vars(extra)).expect("test settings are valid")
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.db_url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// A session whose open transaction holds `record`'s key as another replica storing it would:
    /// the key's advisory lock taken (see V10) and its row inserted, not committed. A job storing
    /// that record waits in the database (alone: the rest of its group does not) until the session
    /// sends `ROLLBACK` or `COMMIT`.
    pub async fn hold_key(&self, record: &serde_json::Value) -> tokio_postgres::Client {
        self.hold_key_as(record, true).await
    }

    /// As [`TestEnv::hold_key`], as a replica of a version before V10 would: with `announced`
    /// false, the row only, no advisory lock.
    pub async fn hold_key_as(
        &self,
        record: &serde_json::Value,
        announced: bool,
    ) -> tokio_postgres::Client {
        let record_id: uuid::Uuid = record["record_id"].as_str().unwrap().parse().unwrap();
        let holder = self.db().await;
        holder.batch_execute("BEGIN").await.unwrap();
        if announced {
            holder
                .execute("SELECT lock_record_key($1, 1, true)", &[&record_id])
                .await
                .unwrap();
        }
        holder
            .execute(
                "INSERT INTO crf_records (record_id, version, study, site, subject, visit, form, items,
                     status, protocol_version, captured_at, entered_by, payload_sha256)
                 VALUES ($1, 1, 'DEMO-001', 'SITE-03', 'S', 'WEEK4', 'VS', '{}', 'accepted', '1', now(), 'x', 'x')",
                &[&record_id],
            )
            .await
            .unwrap();
        holder
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Ready messages in a queue. Quorum queue counts lag about a second behind: wait for a value
    /// rather than read it once.
    pub async fn ready(&self, queue: &str) -> u32 {
        kit::world::ready(queue).await.unwrap().0
    }

    /// Removes every queue and exchange of this test's world and its database: the queues the
    /// daemon declares for it (work, urgent, their delay queues, dead-letter), those the test
    /// declared (event listeners, reply queues), and any other the broker lists under its suffix.
    pub async fn cleanup(self) {
        let made = self.made.lock().unwrap().clone();
        if let Err(e) = self.world.remove(&self.settings(&[]), &made).await {
            eprintln!("warning: cleaning up {}: {e}", self.world.mark);
        }
    }
}

/// The real binary, pointed at this test's world (and nothing else of the environment), to start
/// with the kit: `launch(&env, &[]).args(["run"]).spawn()`.
pub fn launch(env: &TestEnv, extra: &[(&str, &str)]) -> Launch {
    Launch::new(BIN).envs(env.env_vars(extra))
}

/// The daemon (`edc-ingest run`, the real binary) on this test's world, its output captured; killed
/// if the test ends before it does.
pub fn run_daemon(env: &TestEnv, extra: &[(&str, &str)]) -> DaemonProcess {
    launch(env, extra).name("the daemon").args(["run"]).spawn()
}

/// The real binary, pointed at this test's world, as a `Command` (for a one-shot command that
/// needs a pipe of its own).
pub fn binary(env: &TestEnv, extra: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    cmd.env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env.env_vars(extra) {
        cmd.env(k, v);
    }
    cmd
}

pub async fn amqp() -> Connection {
    kit::world::amqp()
        .await
        .unwrap_or_else(|e| panic!("{e} (run scripts/test.sh)"))
}

/// A daemon running in this process.
pub struct Daemon {
    pub token: CancellationToken,
    pub stats: Arc<Stats>,
    pub handle: JoinHandle<Result<Summary, edc_ingest::failure::Failure>>,
}

impl Daemon {
    pub fn start(settings: Settings) -> Daemon {
        let token = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let handle = tokio::spawn(edc_ingest::daemon::run_with_stats(
            settings,
            token.clone(),
            stats.clone(),
        ));
        Daemon {
            token,
            stats,
            handle,
        }
    }

    pub async fn wait_settled(&self, n: u64, within: Duration) {
        let stats = self.stats.clone();
        wait_for(&format!("{n} messages settled"), within, || {
            let s = stats.summary();
            async move { s.settled() >= n }
        })
        .await;
    }

    pub async fn stop(self) -> Summary {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("daemon stops in time")
            .unwrap()
            .unwrap()
    }
}

/// A port nothing listens on now: bound, noted, freed. For a daemon whose HTTP listener a test asks.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` on the daemon's HTTP listener at `port`: the status and the whole body; None if
/// nothing answers (not listening yet, or any more).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    kit::http::get(port, path).await
}

/// The real binary with this test's environment (and `extra`), as an operator would run a command.
pub fn edc(env: &TestEnv, extra: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    launch(env, extra)
        .name(format!("edc-ingest {}", args.join(" ")))
        .args(args)
        .spawn()
        .output_within(COMMAND_WAIT)
}

/// The real binary with this test's environment, to spawn.
pub fn edc_command(env: &TestEnv, extra: &[(&str, &str)], args: &[&str]) -> std::process::Command {
    let mut cmd = binary(env, extra);
    cmd.args(args);
    cmd
}

/// A command's stdout and stderr, as text.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
