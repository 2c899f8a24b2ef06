//! Test harness: a fresh database and fresh queues per test, the daemon in-process (or its binary),
//! and helpers that wait for conditions instead of sleeping.

#![allow(dead_code)]

use std::future::Future;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use edc_ingest::config::Settings;
use edc_ingest::stats::{Stats, Summary};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

#[path = "../common/endpoints.rs"]
mod endpoints;
use endpoints::with_db;
pub use endpoints::{amqp_url, pg_url, repo};
#[path = "../common/summary.rs"]
mod summary;
pub use summary::summary_field;

/// One test's world: its own database and queue names.
pub struct TestEnv {
    pub suffix: String,
    pub db_url: String,
    pub db_name: String,
    pub queue: String,
    pub dlx: String,
    pub dlq: String,
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
        };
        // The daemon migrates at start too; doing it here lets a test query the tables at once.
        edc_ingest::db::migrate(&env.settings(&[]).postgres)
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
        queue
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
            ("EDC__POSTGRES__POOL_SIZE".into(), "8".into()),
            ("EDC__WORKERS".into(), "4".into()),
            (
                "EDC__STUDIES_DIR".into(),
                repo().join("config/studies").display().to_string(),
            ),
            ("EDC__DEV_INSECURE_PSEUDONYM_KEY".into(), "true".into()),
            ("EDC__SHUTDOWN_GRACE".into(), "10s".into()),
            ("EDC__JOB_TIMEOUT".into(), "10s".into()),
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

    pub async fn count(&self, sql: &str) -> i64 {
        self.db().await.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Publishes raw bodies, each with the given message id, and waits for the broker's confirms.
    pub async fn publish(&self, bodies: &[(&str, Vec<u8>)]) {
        self.publish_with(&[], bodies).await;
    }

    /// The same, with the topology declared as the daemon would with `extra` settings (a queue's
    /// arguments must match every later declaration of it).
    pub async fn publish_with(&self, extra: &[(&str, &str)], bodies: &[(&str, Vec<u8>)]) {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let settings = self.settings(extra);
        edc_ingest::amqp::declare(&ch, &settings.amqp, &settings.retry)
            .await
            .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for (id, body) in bodies {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(*id))
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

    /// Publishes NDJSON lines, message id = line number.
    pub async fn publish_lines(&self, lines: &[String]) {
        let bodies: Vec<(String, Vec<u8>)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("m{i}"), l.clone().into_bytes()))
            .collect();
        let refs: Vec<(&str, Vec<u8>)> = bodies
            .iter()
            .map(|(i, b)| (i.as_str(), b.clone()))
            .collect();
        self.publish(&refs).await;
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

    pub async fn cleanup(self) {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        for q in [&self.queue, &self.dlq] {
            let _ = ch
                .queue_delete(ShortString::from(q.as_str()), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [self.dlx.clone(), self.events_exchange()] {
            let _ = ch
                .exchange_delete(ShortString::from(exchange.as_str()), Default::default())
                .await;
        }
        let _ = conn.close(200, ShortString::from("bye")).await;
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

pub async fn amqp() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ for tests (run scripts/test.sh)")
}

/// A daemon running in this process.
pub struct Daemon {
    pub token: CancellationToken,
    pub stats: Arc<Stats>,
    pub handle: JoinHandle<anyhow::Result<Summary>>,
}

impl Daemon {
    pub fn start(settings: Settings) -> Daemon {
        let token = CancellationToken::new();
        let stats = Arc::new(Stats::default());
        let handle = tokio::spawn(edc_ingest::app::run_with_stats(
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

/// Polls `cond` every 50 ms until it holds; fails the test after `within`.
pub async fn wait_for<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    edc_command(env, extra, args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The real binary with this test's environment, to spawn.
pub fn edc_command(env: &TestEnv, extra: &[(&str, &str)], args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_edc-ingest"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env.env_vars(extra) {
        cmd.env(k, v);
    }
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

/// Kills a spawned daemon when the test ends, even by a failed assertion, so that it cannot outlive
/// its test. Harmless once the process has exited.
pub struct Reaper(pub u32);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &self.0.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
