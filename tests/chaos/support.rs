//! Chaos harness: the flood, fault injection and the final audit (the daemon processes of a
//! scenario are [`Procs`], in `procs.rs`).

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant};

use edc_ingest::pipeline::{self, Pseudonymizer};
use edc_ingest::protocol::Registry;
use lapin::options::{BasicGetOptions, BasicNackOptions};
use lapin::types::ShortString;

use crate::helpers::*;
pub use crate::procs::Procs;

pub const FLOOD: usize = 20_000;
pub const WAIT: Duration = Duration::from_secs(240);

/// Generated records and what must become of each.
pub struct Flood {
    pub lines: Vec<String>,
    pub valid: i64,
    pub findings: i64,
    pub rejected: BTreeMap<String, i64>,
    /// Per upload batch: (its size, how many of its messages can be attributed to it). A malformed
    /// body cannot say which batch it belongs to, so its batch never completes.
    pub batches: BTreeMap<uuid::Uuid, (i64, i64)>,
}

impl Flood {
    pub fn new(count: usize, seed: u64, extra: Vec<String>) -> Flood {
        let mut lines = generated(count, seed, 0.02, 0.05);
        lines.extend(extra);
        let registry = Registry::load(&repo().join("config/studies")).unwrap();
        let key = Pseudonymizer::insecure_dev();
        let (mut valid, mut findings, mut rejected) = (0, 0, BTreeMap::new());
        let mut batches: BTreeMap<uuid::Uuid, (i64, i64)> = BTreeMap::new();
        for line in &lines {
            let batch = match pipeline::prepare(line.as_bytes(), 1 << 20, &registry, &key) {
                Ok(rec) => {
                    valid += 1;
                    findings += rec.findings.len() as i64;
                    rec.batch_id.zip(rec.batch_size)
                }
                Err(r) => {
                    *rejected.entry(r.kind.to_string()).or_insert(0) += 1;
                    r.batch_id.zip(r.batch_size)
                }
            };
            if let Some((id, size)) = batch {
                batches.entry(id).or_insert((i64::from(size), 0)).1 += 1;
            }
        }
        Flood {
            lines,
            valid,
            findings,
            rejected,
            batches,
        }
    }

    pub fn invalid(&self) -> i64 {
        self.rejected.values().sum()
    }

    pub fn total(&self) -> i64 {
        self.lines.len() as i64
    }
}

/// Publishes the flood with windowed publisher confirms (the uploader's own code path).
pub async fn preload(env: &TestEnv, flood: &Flood, url: Option<&str>) {
    // Listen for batch.completed before anything can complete.
    env.listen_events("batch.completed").await;
    let mut settings = env.settings(&[]);
    if let Some(u) = url {
        settings.amqp.url = edc_ingest::config::SecretUrl::new(u);
    }
    let text = flood.lines.join("\n");
    let sent =
        edc_ingest::tools::publish::publish(&settings.amqp, &settings.retry, text.as_bytes())
            .await
            .unwrap();
    assert_eq!(sent as usize, flood.lines.len());
}

/// Runs `scripts/services.sh ARGS` (the same servers the tests use) and insists it succeeds.
pub fn services(args: &[&str]) {
    let status = Command::new(repo().join("scripts/services.sh"))
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/services.sh {args:?}");
}

/// Records stored now. The database may be the thing that is down: it keeps asking, for at most
/// `WAIT`, then fails the test (a database that never comes back must not hang it).
pub async fn stored(env: &TestEnv) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the database did not answer within {WAIT:?}"
        );
        if let Ok(Ok((client, conn))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_postgres::connect(&env.db_url, tokio_postgres::NoTls),
        )
        .await
        {
            tokio::spawn(conn);
            if let Ok(row) = client
                .query_one("SELECT count(*) FROM crf_records", &[])
                .await
            {
                return row.get(0);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until at least `n` records are stored.
pub async fn until_stored(env: &TestEnv, n: i64) {
    wait_for(&format!("{n} records stored"), WAIT, || async {
        stored(env).await >= n
    })
    .await;
}

/// Time from now until the next record commits: how long the daemon took to recover.
pub async fn time_to_recover(env: &TestEnv, flood: &Flood) -> Duration {
    let start = Instant::now();
    let before = stored(env).await;
    wait_for("a record stored after the fault", WAIT, || async {
        let now = stored(env).await;
        now > before || now >= flood.valid
    })
    .await;
    start.elapsed()
}

/// Waits until every message of the flood has its outcome in the database.
pub async fn until_done(env: &TestEnv, flood: &Flood) {
    let (valid, invalid) = (flood.valid, flood.invalid());
    wait_for("every record stored or rejected", WAIT, || async {
        stored(env).await == valid && env.count("SELECT count(*) FROM rejections").await == invalid
    })
    .await;
}

/// One row of the results table.
pub struct Row {
    pub scenario: &'static str,
    pub sent: i64,
    pub stored: i64,
    pub dead: BTreeMap<String, i64>,
    pub dlq_repeats: i64,
    pub duplicates: u64,
    pub recover: Vec<Duration>,
    pub elapsed: Duration,
}

impl Row {
    pub fn print(&self) {
        let dead: Vec<String> = self.dead.iter().map(|(k, n)| format!("{k}={n}")).collect();
        let recover: Vec<String> = self
            .recover
            .iter()
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .collect();
        println!(
            "CHAOS | {:<22} | sent {:>6} | stored {:>6} | dead-lettered {:<28} | dlq repeats {:>2} | duplicates prevented {:>4} | recover {:<18} | {:.0}s",
            self.scenario,
            self.sent,
            self.stored,
            dead.join(" "),
            self.dlq_repeats,
            self.duplicates,
            recover.join(" "),
            self.elapsed.as_secs_f64()
        );
    }
}

/// The audit after a scenario. `faults` bounds the dead-letter repeats a fault may cause.
pub async fn audit(env: &TestEnv, flood: &Flood, procs: &Procs, faults: i64, prefetch: i64) -> Row {
    let db = env.db().await;
    let one = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    // Every valid record exactly once, with exactly one 'created' audit row.
    assert_eq!(
        one("SELECT count(*) FROM crf_records").await,
        flood.valid,
        "records stored"
    );
    assert_eq!(
        one("SELECT count(*) FROM audit_trail WHERE action = 'created'").await,
        flood.valid,
        "audit rows"
    );
    assert_eq!(
        one("SELECT count(*) FROM (SELECT 1 FROM audit_trail GROUP BY record_id, version HAVING count(*) > 1) d").await,
        0,
        "a record version audited twice"
    );
    // No data query duplicated: exactly the findings of the flood.
    assert_eq!(
        one("SELECT count(*) FROM data_queries").await,
        flood.findings,
        "data queries"
    );
    // Every invalid message rejected once, with its kind, and nothing else rejected.
    let rows = db
        .query(
            "SELECT kind, count(*) FROM rejections GROUP BY kind ORDER BY kind",
            &[],
        )
        .await
        .unwrap();
    let dead: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        dead, flood.rejected,
        "rejections by kind (nothing dead-lettered because of the fault)"
    );

    // The broker: each rejected message is in the dead-letter queue; repeats only from faults.
    let letters = env.drain_dlq().await;
    let mut bodies = HashSet::new();
    for m in &letters {
        bodies.insert(m.delivery.data.clone());
    }
    assert_eq!(
        bodies.len() as i64,
        flood.invalid(),
        "distinct dead letters"
    );
    let repeats = letters.len() as i64 - flood.invalid();
    assert!(
        repeats <= faults * prefetch,
        "{repeats} dead-letter repeats for {faults} faults"
    );

    // Left in the work queue can only be redeliveries of what is already stored: a fresh daemon
    // settles them all as duplicates, and then every queue is empty.
    let settings = env.settings(&[]);
    let daemon = Daemon::start(settings.clone());
    wait_for("the work queue drained", WAIT, || async {
        env.ready(&env.queue).await == 0
    })
    .await;
    wait_for("the outbox published", WAIT, || async {
        env.count("SELECT count(*) FROM outbox").await == 0
    })
    .await;
    let leftover = daemon.stop().await;

    // Batch receipts: exact counts, and exactly one batch.completed event per completed batch.
    let receipts = db
        .query(
            "SELECT batch_id, accepted + queried + duplicates + dead_lettered_total, completed_at IS NOT NULL FROM batch_receipts",
            &[],
        )
        .await
        .unwrap();
    let mut completed_expected = HashSet::new();
    for (id, (size, attributed)) in &flood.batches {
        let row = receipts
            .iter()
            .find(|r| r.get::<_, uuid::Uuid>(0) == *id)
            .expect("a receipt per batch");
        assert_eq!(
            row.get::<_, i32>(1) as i64,
            *attributed,
            "outcomes counted on batch {id}"
        );
        assert_eq!(
            row.get::<_, bool>(2),
            attributed == size,
            "completion of batch {id}"
        );
        if attributed == size {
            completed_expected.insert(*id);
        }
    }
    let events = env
        .drain(&format!("{}.events.batch.completed", env.queue))
        .await;
    let mut event_ids: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for m in &events {
        let body: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
        event_ids
            .entry(body["batch_id"].as_str().unwrap().to_string())
            .or_default()
            .insert(body["event_id"].as_str().unwrap().to_string());
    }
    let completed_seen: HashSet<uuid::Uuid> = event_ids
        .keys()
        .map(|k| uuid::Uuid::parse_str(k).unwrap())
        .filter(|id| flood.batches.contains_key(id))
        .collect();
    assert_eq!(completed_seen, completed_expected, "batch.completed events");
    assert!(
        event_ids.values().all(|ids| ids.len() == 1),
        "one batch.completed event per batch: {event_ids:?}"
    );
    assert_eq!(
        leftover.settled(),
        leftover.duplicate,
        "only duplicates were left over: {leftover}"
    );
    let mut queues = vec![env.queue.clone()];
    queues.extend(edc_ingest::broker::topology::retry_queues(
        &env.queue,
        &settings.retry,
    ));
    for q in &queues {
        assert!(is_empty(q).await, "queue {q} is empty");
    }
    Row {
        scenario: "",
        sent: flood.total(),
        stored: flood.valid,
        dead,
        dlq_repeats: repeats,
        duplicates: procs.duplicates() + leftover.duplicate,
        recover: Vec::new(),
        elapsed: Duration::ZERO,
    }
}

/// Exactly empty (no lag): a basic.get finds nothing. A message found is put back.
async fn is_empty(queue: &str) -> bool {
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: false })
        .await
        .unwrap();
    let empty = match got {
        None => true,
        Some(m) => {
            m.delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await
                .unwrap();
            false
        }
    };
    conn.close(200, ShortString::from("bye")).await.unwrap();
    empty
}

/// The daemon consumes again after the fault: a record published now is stored.
pub async fn consumes_again(env: &TestEnv, flood: &mut Flood) {
    let before = stored(env).await;
    env.publish(&[("after-the-fault", bytes(&record(vs_items())))])
        .await;
    wait_for(
        "a record published after the fault is stored",
        WAIT,
        || async { stored(env).await == before + 1 },
    )
    .await;
    flood.valid += 1;
}
