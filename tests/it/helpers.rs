//! Test harness: a fresh database and fresh queues per test, the daemon in-process (or its binary,
//! through the shared kit in `tests/common/kit`), and bounded waits instead of sleeps.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edc_ingest::config::Settings;
use edc_ingest::stats::{Stats, Summary};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

#[path = "../common/endpoints.rs"]
mod endpoints;
use endpoints::with_db;
#[allow(unused_imports)] // the chaos suite includes this file and uses fewer
pub use endpoints::{amqp_url, amqps_url, pg_runtime_url, pg_url, repo, tls_dir};
#[path = "../common/summary.rs"]
mod summary;
pub use summary::summary_field;
#[path = "../common/kit/mod.rs"]
pub mod kit;
#[allow(unused_imports)] // the chaos suite includes this file and uses fewer
pub use kit::process::{DaemonProcess, Exit, Launch, Signal};
pub use kit::wait::wait_for;
#[path = "metrics.rs"]
mod metrics;
#[allow(unused_imports)] // the chaos suite includes this file and uses fewer
pub use metrics::{Metrics, scrape};
#[path = "collector.rs"]
mod collector;
#[allow(unused_imports)] // the chaos suite includes this file and uses fewer
pub use collector::{Collector, attribute_values};

/// The daemon binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_edc-ingest");

/// How long a one-shot command ([`edc`]) may run.
pub const COMMAND_WAIT: Duration = Duration::from_secs(120);

/// One test's world: its own database and queue names.
pub struct TestEnv {
    pub suffix: String,
    pub db_url: String,
    pub db_name: String,
    pub queue: String,
    pub dlx: String,
    pub dlq: String,
    /// Queues this test declared itself (event listeners, reply queues), removed by `cleanup`.
    made: Mutex<Vec<String>>,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let db_name = format!("edc_test_{suffix}");
        let (admin, conn) = tokio_postgres::connect(&pg_url(), NoTls)
            .await
            .expect("PostgreSQL for tests (run scripts/test.sh)");
        tokio::spawn(conn);
        admin
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await
            .unwrap();
        let env = TestEnv {
            db_url: with_db(&pg_url(), &db_name),
            db_name,
            queue: format!("edc.records.t{suffix}"),
            dlx: format!("edc.dlx.t{suffix}"),
            dlq: format!("edc.records.dlq.t{suffix}"),
            suffix,
            made: Mutex::new(Vec::new()),
        };
        // The daemon migrates at start too; doing it here lets a test query the tables at once.
        edc_ingest::store::migrate(&env.settings(&[]).postgres)
            .await
            .expect("migrations apply");
        env
    }

    /// The fast lane of this test's world.
    pub fn urgent_queue(&self) -> String {
        format!("{}.urgent", self.queue)
    }

    /// The events exchange of this test's world.
    pub fn events_exchange(&self) -> String {
        format!("edc.events.t{}", self.suffix)
    }

    /// Declares a queue bound to this test's events exchange with `routing_key` (e.g. `#`); the
    /// exchange is declared too, so binding works before the daemon starts.
    pub async fn listen_events(&self, routing_key: &str) -> String {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let queue = format!(
            "{}.events.{}",
            self.queue,
            routing_key.replace(['#', '*'], "all")
        );
        ch.exchange_declare(
            ShortString::from(self.events_exchange()),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        // A quorum queue, like the daemon's: a classic queue on a stopped node would silently miss
        // events (the cluster scenario stops nodes).
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        ch.queue_declare(
            ShortString::from(queue.as_str()),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
        ch.queue_bind(
            ShortString::from(queue.as_str()),
            ShortString::from(self.events_exchange()),
            ShortString::from(routing_key),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        conn.close(200, ShortString::from("bye")).await.unwrap();
        self.made.lock().unwrap().push(queue.clone());
        queue
    }

    /// Declares a plain durable queue (for answers, say).
    pub async fn declare_queue(&self, name: &str) {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            ShortString::from(name),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        conn.close(200, ShortString::from("bye")).await.unwrap();
        self.made.lock().unwrap().push(name.to_string());
    }

    pub async fn delete_queue(&self, name: &str) {
        let conn = amqp().await;
        let _ = kit::broker::delete(&conn, &[name.to_string()], &[]).await;
        let _ = conn.close(200, ShortString::from("bye")).await;
    }

    /// Takes every message from a queue (acking them).
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            out.push(m);
        }
        conn.close(200, ShortString::from("bye")).await.unwrap();
        out
    }

    /// The environment variables that point the daemon at this test's world.
    pub fn env_vars(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = vec![
            ("EDC__AMQP__URL".into(), amqp_url()),
            ("EDC__AMQP__QUEUE".into(), self.queue.clone()),
            ("EDC__AMQP__URGENT_QUEUE".into(), self.urgent_queue()),
            ("EDC__AMQP__EVENTS_EXCHANGE".into(), self.events_exchange()),
            ("EDC__AMQP__DEAD_LETTER_EXCHANGE".into(), self.dlx.clone()),
            ("EDC__AMQP__DEAD_LETTER_QUEUE".into(), self.dlq.clone()),
            ("EDC__POSTGRES__URL".into(), self.db_url.clone()),
            // The owner (it made the test's database): allowed on purpose. A test that runs as the
            // runtime login (`edc_app`) or checks the refusal sets its own.
            ("EDC__POSTGRES__ALLOW_OWNER_RUNTIME".into(), "true".into()),
            ("EDC__POSTGRES__POOL_SIZE".into(), "8".into()),
            ("EDC__WORKERS".into(), "4".into()),
            (
                "EDC__STUDIES_DIR".into(),
                repo().join("config/studies").display().to_string(),
            ),
            ("EDC__DEV_INSECURE_PSEUDONYM_KEY".into(), "true".into()),
            ("EDC__SHUTDOWN_GRACE".into(), "10s".into()),
            ("EDC__JOB_TIMEOUT".into(), "10s".into()),
            // A free port each: daemons of parallel tests never share one. A test that asks the
            // listener sets a port it knows (see `free_port`).
            ("EDC__HTTP__LISTEN".into(), "127.0.0.1:0".into()),
        ];
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

    /// Publishes raw bodies, each with the given message id, and waits for the broker's confirms.
    pub async fn publish<S: AsRef<str>>(&self, bodies: &[(S, Vec<u8>)]) {
        self.publish_declared(&[], bodies).await;
    }

    /// The same, with the topology declared as the daemon would with `extra` settings (a queue's
    /// arguments must match every later declaration of it).
    pub async fn publish_declared<S: AsRef<str>>(
        &self,
        extra: &[(&str, &str)],
        bodies: &[(S, Vec<u8>)],
    ) {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let settings = self.settings(extra);
        edc_ingest::broker::declare(&ch, &settings.amqp, &settings.retry)
            .await
            .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for (id, body) in bodies {
            let id = id.as_ref();
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(id))
                .with_correlation_id(ShortString::from(format!("corr-{id}")));
            let confirm = ch
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(self.queue.as_str()),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack(), "broker confirmed the test message");
        }
        conn.close(200, ShortString::from("bye")).await.unwrap();
    }

    /// Publishes one body with the given properties to the work queue (the lane's queue if
    /// `queue` is given), and waits for the broker's confirm.
    pub async fn publish_with(&self, body: &[u8], props: BasicProperties) {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let settings = self.settings(&[]);
        edc_ingest::broker::declare(&ch, &settings.amqp, &settings.retry)
            .await
            .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let confirm = ch
            .basic_publish(
                ShortString::from(""),
                ShortString::from(self.queue.as_str()),
                BasicPublishOptions::default(),
                body,
                props.with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "broker confirmed the test message");
        conn.close(200, ShortString::from("bye")).await.unwrap();
    }

    /// Publishes NDJSON lines, message id = line number.
    pub async fn publish_lines(&self, lines: &[String]) {
        let bodies: Vec<(String, Vec<u8>)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("m{i}"), l.clone().into_bytes()))
            .collect();
        self.publish(&bodies).await;
    }

    /// Takes every message from the dead-letter queue (acking them).
    pub async fn drain_dlq(&self) -> Vec<lapin::message::BasicGetMessage> {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                ShortString::from(self.dlq.as_str()),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            out.push(m);
        }
        conn.close(200, ShortString::from("bye")).await.unwrap();
        out
    }

    /// Ready messages in a queue. Quorum queue counts lag about a second behind: wait for a value
    /// rather than read it once.
    pub async fn ready(&self, queue: &str) -> u32 {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        conn.close(200, ShortString::from("bye")).await.unwrap();
        q.message_count()
    }

    /// Removes every queue and exchange of this test's world and its database: the queues the
    /// daemon declares for it (work, urgent, their delay queues, dead-letter), those the test
    /// declared (event listeners, reply queues), and any other the broker lists under its suffix.
    pub async fn cleanup(self) {
        let settings = self.settings(&[]);
        let mut queues = kit::broker::daemon_queues(&settings);
        queues.extend(self.made.lock().unwrap().iter().cloned());
        queues.extend(kit::broker::queues_marked(&format!("t{}", self.suffix)));
        let exchanges = kit::broker::daemon_exchanges(&settings);
        let conn = amqp().await;
        let deleted = kit::broker::delete(&conn, &queues, &exchanges).await;
        let _ = conn.close(200, ShortString::from("bye")).await;
        if let Err(e) = deleted {
            eprintln!("warning: cleaning up the queues of t{}: {e}", self.suffix);
        }
        let (admin, c) = tokio_postgres::connect(&pg_url(), NoTls).await.unwrap();
        tokio::spawn(c);
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            ))
            .await;
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
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ for tests (run scripts/test.sh)")
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

/// GET on RabbitMQ's management API (guest/guest on loopback), parsed as JSON.
pub fn management(path: &str) -> serde_json::Value {
    let (_, body) = management_request("GET", path, None);
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// A request to RabbitMQ's management API: the status line and the body.
pub fn management_request(
    method: &str,
    path: &str,
    json: Option<&serde_json::Value>,
) -> (String, String) {
    let port = std::env::var("EDC_TEST_MANAGEMENT_PORT").unwrap_or_else(|_| "15672".into());
    let mut s =
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).expect("RabbitMQ management API");
    let body = json.map(|j| j.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The broker's version, as its management API reports it (e.g. "3.10.8", "4.0.5").
pub fn broker_version() -> String {
    management("/api/overview")["rabbitmq_version"]
        .as_str()
        .expect("the management API reports the version")
        .to_string()
}

/// The documented example record, with a fresh record id.
pub fn record(form_items: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"schema": "edc.crf.v1", "record_id": uuid::Uuid::new_v4().to_string(), "version": 1,
        "study": "DEMO-001", "site": "SITE-03", "subject": "DEMO-001-03-0042", "visit": "WEEK4",
        "form": "VS", "captured_at": "2026-11-20T10:15:00Z", "entered_by": "crc-17",
        "batch": {"id": "b1f2c3d4-0000-4000-8000-000000000001", "size": 1000},
        "identifiers": {"full_name": "Ada Lovelace", "birth_date": "1961-03-02", "phone": "+44 20 7946 0000",
            "national_id": "QQ 12 34 56 C", "mrn": "MRN-778899", "address": "12 Example Road, London",
            "email": "ada@example.org"},
        "items": form_items})
}

pub fn vs_items() -> serde_json::Value {
    serde_json::json!({"SYSBP": 128, "DIABP": 82, "PULSE": 71, "TEMP": 36.8, "VSDAT": "2026-11-20"})
}

pub fn bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// A header of a dead letter, as text.
pub fn header(m: &lapin::message::BasicGetMessage, name: &str) -> Option<String> {
    let h = m.delivery.properties.headers().as_ref()?;
    h.inner().get(name).map(|v| match v {
        lapin::types::AMQPValue::LongString(s) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        other => format!("{other:?}"),
    })
}

/// Generated records, as the `generate` command makes them.
pub fn generated(count: usize, seed: u64, invalid: f64, queried: f64) -> Vec<String> {
    let opts = edc_ingest::tools::generate::Options {
        count,
        seed,
        invalid_ratio: invalid,
        queried_ratio: queried,
        duplicate_ratio: 0.0,
        batch_size: 500,
    };
    let mut out = Vec::new();
    edc_ingest::tools::generate::generate(&opts, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
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
