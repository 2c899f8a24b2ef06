//! One test per fault. Each: preload the flood, start the daemon(s), inject the fault mid-drain,
//! wait for every outcome, check the daemon consumes again, audit, print the table row.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::helpers::*;
use crate::support::*;

const PREFETCH: i64 = 8;

fn seed() -> u64 {
    std::env::var("EDC_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let s = rand::random::<u32>() as u64;
            println!("CHAOS | seed {s} (set EDC_CHAOS_SEED to replay)");
            s
        })
}

fn finish(mut row: Row, scenario: &'static str, recover: Vec<Duration>, started: Instant) {
    row.scenario = scenario;
    row.recover = recover;
    row.elapsed = started.elapsed();
    row.print();
}

/// The opt-in fast configuration: 64 records per transaction.
const BATCHED: &[(&str, &str)] = &[("EDC__BATCH_SIZE", "64")];

#[tokio::test]
async fn kill_9_three_times_at_random_moments() {
    kill_9_three_times(&[], "kill -9 x3", PREFETCH).await;
}

#[tokio::test]
async fn kill_9_three_times_while_committing_in_batches() {
    kill_9_three_times(BATCHED, "kill -9 x3, batch 64", PREFETCH * 64).await;
}

async fn kill_9_three_times(config: &[(&str, &str)], name: &'static str, prefetch: i64) {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let env = TestEnv::new().await;
    let mut flood = Flood::new(FLOOD, seed, vec![]);
    preload(&env, &flood, None).await;
    let started = Instant::now();
    let mut procs = Procs::new();
    let mut daemon = procs.spawn(&env, config);
    let mut recover = Vec::new();
    for (lo, hi) in [(0.10, 0.30), (0.40, 0.60), (0.70, 0.90)] {
        let at = (flood.valid as f64 * rng.random_range(lo..hi)) as i64;
        until_stored(&env, at).await;
        procs.kill9(daemon);
        daemon = procs.spawn(&env, config);
        recover.push(time_to_recover(&env, &flood).await);
    }
    until_done(&env, &flood).await;
    consumes_again(&env, &mut flood).await;
    procs.stop(daemon);
    let row = audit(&env, &flood, &procs, 3, prefetch).await;
    finish(row, name, recover, started);
    env.cleanup().await;
}

#[tokio::test]
async fn quick_broker_restart() {
    let env = TestEnv::new().await;
    let mut flood = Flood::new(FLOOD, seed(), vec![]);
    preload(&env, &flood, None).await;
    let started = Instant::now();
    let mut procs = Procs::new();
    let daemon = procs.spawn(&env, &[]);
    until_stored(&env, flood.valid / 3).await;
    services(&["rabbit-stop-app"]);
    services(&["rabbit-start-app"]);
    let recover = vec![time_to_recover(&env, &flood).await];
    until_done(&env, &flood).await;
    consumes_again(&env, &mut flood).await;
    procs.stop(daemon);
    let row = audit(&env, &flood, &procs, 1, PREFETCH).await;
    finish(row, "broker stop_app/start_app", recover, started);
    env.cleanup().await;
}

#[tokio::test]
async fn full_broker_restart() {
    let env = TestEnv::new().await;
    let mut flood = Flood::new(FLOOD, seed(), vec![]);
    preload(&env, &flood, None).await;
    let started = Instant::now();
    let mut procs = Procs::new();
    let daemon = procs.spawn(&env, &[]);
    until_stored(&env, flood.valid / 3).await;
    services(&["rabbit-restart"]);
    let recover = vec![time_to_recover(&env, &flood).await];
    until_done(&env, &flood).await;
    consumes_again(&env, &mut flood).await;
    procs.stop(daemon);
    let row = audit(&env, &flood, &procs, 1, PREFETCH).await;
    finish(row, "broker full restart", recover, started);
    env.cleanup().await;
}

#[tokio::test]
async fn postgres_stopped_immediately_for_ten_seconds() {
    postgres_outage(&[], "postgres down 10s", PREFETCH).await;
}

#[tokio::test]
async fn postgres_stopped_while_committing_in_batches() {
    postgres_outage(BATCHED, "postgres down 10s, batch 64", PREFETCH * 64).await;
}

async fn postgres_outage(config: &[(&str, &str)], name: &'static str, prefetch: i64) {
    let env = TestEnv::new().await;
    let mut flood = Flood::new(FLOOD, seed(), vec![]);
    preload(&env, &flood, None).await;
    let started = Instant::now();
    let mut procs = Procs::new();
    let daemon = procs.spawn(&env, config);
    until_stored(&env, flood.valid / 3).await;
    services(&["pg-stop-immediate"]);
    tokio::time::sleep(Duration::from_secs(10)).await; // the outage itself
    services(&["pg-start"]);
    let recover = vec![time_to_recover(&env, &flood).await];
    until_done(&env, &flood).await;
    consumes_again(&env, &mut flood).await;
    procs.stop(daemon);
    let row = audit(&env, &flood, &procs, 1, prefetch).await;
    finish(row, name, recover, started);
    env.cleanup().await;
}

#[tokio::test]
async fn three_replicas_one_terminated_one_killed() {
    let env = TestEnv::new().await;
    let mut flood = Flood::new(FLOOD, seed(), vec![]);
    preload(&env, &flood, None).await;
    let started = Instant::now();
    let mut procs = Procs::new();
    let a = procs.spawn(&env, &[]);
    let b = procs.spawn(&env, &[]);
    let c = procs.spawn(&env, &[]);
    until_stored(&env, flood.valid / 4).await;
    procs.stop(a); // SIGTERM: drains and exits 0
    until_stored(&env, flood.valid / 2).await;
    procs.kill9(b);
    let recover = vec![time_to_recover(&env, &flood).await];
    until_done(&env, &flood).await;
    consumes_again(&env, &mut flood).await;
    procs.stop(c);
    let row = audit(&env, &flood, &procs, 2, PREFETCH).await;
    finish(row, "3 replicas, TERM + KILL", recover, started);
    env.cleanup().await;
}

#[tokio::test]
async fn a_message_that_crashes_the_process_becomes_poison() {
    let env = TestEnv::new().await;
    let crashers: Vec<String> = (0..2)
        .map(|_| {
            let mut r = record(vs_items());
            r["entered_by"] = serde_json::json!(edc_ingest::fault::ABORT_MARKER);
            r.to_string()
        })
        .collect();
    let mut flood = Flood::new(FLOOD, seed(), vec![]);
    // The crashers go in early, among innocent messages; they count as rejected `poison`.
    let mut lines = flood.lines.clone();
    lines.insert(1000, crashers[0].clone());
    lines.insert(5000, crashers[1].clone());
    flood.lines = lines;
    *flood.rejected.entry("poison".into()).or_insert(0) += 2;
    preload(&env, &flood, None).await;
    let started = Instant::now();
    let mut procs = Procs::new();
    let mut crashes = 0;
    let mut daemon = procs.spawn(&env, &[]);
    // A supervisor's job: restart the daemon whenever it dies, until every message has its outcome.
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "flood not done in time");
        if let Some(status) = daemon.child.try_wait().unwrap() {
            assert!(!status.success(), "the daemon died of the crasher");
            crashes += 1;
            daemon = procs.spawn(&env, &[]);
            continue;
        }
        let done = stored(&env).await == flood.valid
            && env.count("SELECT count(*) FROM rejections").await == flood.invalid();
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let limit = env.settings(&[]).crash_limit as usize;
    assert_eq!(
        crashes,
        2 * limit,
        "each crasher killed the process exactly crash_limit times"
    );
    let poison: Vec<String> = env
        .db()
        .await
        .query("SELECT reason FROM rejections WHERE kind = 'poison'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(poison.len(), 2);
    consumes_again(&env, &mut flood).await;
    procs.stop(daemon);
    let row = audit(&env, &flood, &procs, crashes as i64, PREFETCH).await;
    finish(row, "crashing message x2", vec![], started);
    env.cleanup().await;
}

/// Tears the 3-node cluster down even if the scenario fails, so that node 1 is left standalone.
struct Cluster;

impl Cluster {
    fn up() -> Cluster {
        services(&["cluster-up"]);
        Cluster
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        services(&["cluster-down"]);
    }
}

#[tokio::test]
async fn cluster_leader_stopped_mid_flood() {
    let _cluster = Cluster::up();
    let urls = std::env::var("EDC_TEST_CLUSTER_URLS")
        .expect("scripts/services.sh env sets EDC_TEST_CLUSTER_URLS");
    let env = TestEnv::new().await;
    let mut flood = Flood::new(FLOOD, seed(), vec![]);
    preload(&env, &flood, None).await;
    let queue = management(&format!("/api/queues/%2f/{}", env.queue));
    let members = queue["members"].as_array().map_or(0, |m| m.len());
    assert_eq!(
        members, 3,
        "the quorum queue has a replica on each node: {queue}"
    );
    let leader = queue["leader"].as_str().expect("a leader").to_string();
    // Nodes 2 and 3 are named after node 1 (EDC_RABBIT_NODENAME, rabbit@localhost by default):
    // rabbit2@localhost and rabbit3@localhost.
    let node1 = std::env::var("EDC_RABBIT_NODENAME").unwrap_or_else(|_| "rabbit@localhost".into());
    let base = node1.split('@').next().unwrap_or("rabbit");
    let node = match leader.split('@').next() {
        Some(name) if name == format!("{base}2") => "2",
        Some(name) if name == format!("{base}3") => "3",
        _ => "1",
    };
    let started = Instant::now();
    let mut procs = Procs::new();
    let daemon = procs.spawn(&env, &[("EDC__AMQP__URL", &urls)]);
    until_stored(&env, flood.valid / 3).await;
    services(&["rabbit-node-stop", node]);
    let recover = vec![time_to_recover(&env, &flood).await];
    until_stored(&env, flood.valid * 2 / 3).await;
    services(&["rabbit-node-start", node]);
    until_done(&env, &flood).await;
    consumes_again(&env, &mut flood).await;
    procs.stop(daemon);
    let row = audit(&env, &flood, &procs, 1, PREFETCH).await;
    finish(row, "cluster: leader stopped", recover, started);
    env.cleanup().await;
}
