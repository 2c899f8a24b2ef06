//! The scenarios, one row of [`SCENARIOS`] each, and the one driver that runs a row: preload the
//! flood, start the daemon(s), inject the row's fault mid-drain, wait for every outcome, check the
//! daemon consumes again, audit, print the table row. Each row is a test of its own, named after it
//! (`cargo test --test chaos quick_broker_restart`).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::helpers::*;
use crate::support::*;

/// The broker prefetch with one record per transaction, rounded up: the tests run 4 workers.
const PREFETCH: i64 = 16;

/// The opt-in fast configuration: 64 records per transaction.
const BATCHED: &[(&str, &str)] = &[("EDC__BATCH_SIZE", "64")];

/// One scenario: a row of the results table.
pub struct Scenario {
    /// The test that runs it (the row's name in the `scenarios!` table).
    pub test: &'static str,
    /// Its name in the results table.
    pub name: &'static str,
    pub fault: Fault,
    /// Settings of its daemons, over the test world's.
    pub config: &'static [(&'static str, &'static str)],
    /// Deliveries a daemon may hold unacked: what one fault may dead-letter twice (the audit
    /// allows `faults x prefetch` repeats in the dead-letter queue).
    pub prefetch: i64,
}

/// The fault a scenario injects, and what it checks beyond the audit.
pub enum Fault {
    /// `kill -9` of the daemon at a random moment in each of three windows of the drain (10-30 %,
    /// 40-60 %, 70-90 % stored), a new daemon started after each.
    Kill9ThreeTimes,
    /// The broker application stopped and started again (`rabbit-stop-app`, `rabbit-start-app`)
    /// once a third is stored.
    BrokerStopStart,
    /// The whole broker node restarted once a third is stored.
    BrokerRestart,
    /// PostgreSQL stopped like a crash for this long, once a third is stored.
    PostgresDown(Duration),
    /// Three daemons; at a quarter one is stopped with SIGTERM (it must exit 0), at half one is
    /// killed with SIGKILL.
    ThreeReplicasTermAndKill,
    /// Two records that abort the process that handles them, among the first 5,000; a supervisor
    /// starts the daemon again after each death. Checks: each crasher killed it exactly
    /// `crash_limit` times, and both ended as `poison` rejections.
    CrashingMessages,
    /// A 3-node cluster (set up and torn down by the scenario); the work queue's leader node is
    /// stopped once a third is stored and started again at two thirds. Checks: the quorum queue
    /// has a replica on each node.
    ClusterLeaderStopped,
}

/// Makes the table and one test per row.
macro_rules! scenarios {
    ($($test:ident { $($field:ident: $value:expr),* $(,)? })*) => {
        /// Every scenario, in the order of the results table.
        pub const SCENARIOS: &[Scenario] = &[
            $(Scenario { test: stringify!($test), $($field: $value),* }),*
        ];
        $(
            #[tokio::test]
            async fn $test() {
                run(stringify!($test)).await;
            }
        )*
    };
}

scenarios! {
    kill_9_three_times_at_random_moments {
        name: "kill -9 x3", fault: Fault::Kill9ThreeTimes, config: &[], prefetch: PREFETCH,
    }
    kill_9_three_times_while_committing_in_batches {
        name: "kill -9 x3, batch 64", fault: Fault::Kill9ThreeTimes, config: BATCHED,
        prefetch: PREFETCH * 64,
    }
    quick_broker_restart {
        name: "broker stop_app/start_app", fault: Fault::BrokerStopStart, config: &[],
        prefetch: PREFETCH,
    }
    full_broker_restart {
        name: "broker full restart", fault: Fault::BrokerRestart, config: &[], prefetch: PREFETCH,
    }
    postgres_stopped_immediately_for_ten_seconds {
        name: "postgres down 10s", fault: Fault::PostgresDown(Duration::from_secs(10)),
        config: &[], prefetch: PREFETCH,
    }
    postgres_stopped_while_committing_in_batches {
        name: "postgres down 10s, batch 64", fault: Fault::PostgresDown(Duration::from_secs(10)),
        config: BATCHED, prefetch: PREFETCH * 64,
    }
    three_replicas_one_terminated_one_killed {
        name: "3 replicas, TERM + KILL", fault: Fault::ThreeReplicasTermAndKill,
        // Two committers each (one by default): concurrent group commits in every replica.
        config: &[("EDC__COMMITTERS", "2")], prefetch: PREFETCH,
    }
    a_message_that_crashes_the_process_becomes_poison {
        name: "crashing message x2", fault: Fault::CrashingMessages, config: &[],
        prefetch: PREFETCH,
    }
    cluster_leader_stopped_mid_flood {
        name: "cluster: leader stopped", fault: Fault::ClusterLeaderStopped, config: &[],
        prefetch: PREFETCH,
    }
}

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

/// What the fault left for the end of the scenario.
struct Injected {
    /// How long the daemon took to store again after each fault.
    recover: Vec<Duration>,
    /// The daemon still running, stopped with SIGTERM at the end.
    daemon: DaemonProcess,
    /// Faults that may each have dead-lettered up to `prefetch` messages twice.
    faults: i64,
}

/// The driver: runs the scenario that `test` names.
async fn run(test: &str) {
    let scenario = SCENARIOS
        .iter()
        .find(|s| s.test == test)
        .unwrap_or_else(|| panic!("no scenario {test}"));
    let clustered = matches!(scenario.fault, Fault::ClusterLeaderStopped);
    let _cluster = clustered.then(Cluster::up);
    let mut config: Vec<(&str, String)> = scenario
        .config
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
    if clustered {
        let urls = std::env::var("EDC_TEST_CLUSTER_URLS")
            .expect("scripts/services.sh env sets EDC_TEST_CLUSTER_URLS");
        config.push(("EDC__AMQP__URL", urls));
    }
    let config: Vec<(&str, &str)> = config.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let seed = seed();
    let env = TestEnv::new().await;
    let mut flood = Flood::new(FLOOD, seed, vec![]);
    if let Fault::CrashingMessages = scenario.fault {
        plant_crashers(&mut flood);
    }
    preload(&env, &flood, None).await;
    let leader = clustered.then(|| leader_node(&env));
    let started = Instant::now();
    let mut procs = Procs::new();
    let injected = match scenario.fault {
        Fault::Kill9ThreeTimes => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut daemon = procs.spawn(&env, &config);
            let mut recover = Vec::new();
            for (lo, hi) in [(0.10, 0.30), (0.40, 0.60), (0.70, 0.90)] {
                let at = (flood.valid as f64 * rng.random_range(lo..hi)) as i64;
                until_stored(&env, at).await;
                procs.kill9(daemon).await;
                daemon = procs.spawn(&env, &config);
                recover.push(time_to_recover(&env, &flood).await);
            }
            Injected {
                recover,
                daemon,
                faults: 3,
            }
        }
        Fault::BrokerStopStart | Fault::BrokerRestart => {
            let daemon = procs.spawn(&env, &config);
            until_stored(&env, flood.valid / 3).await;
            if let Fault::BrokerRestart = scenario.fault {
                services(&["rabbit-restart"]);
            } else {
                services(&["rabbit-stop-app"]);
                services(&["rabbit-start-app"]);
            }
            Injected {
                recover: vec![time_to_recover(&env, &flood).await],
                daemon,
                faults: 1,
            }
        }
        Fault::PostgresDown(outage) => {
            let daemon = procs.spawn(&env, &config);
            until_stored(&env, flood.valid / 3).await;
            services(&["pg-stop-immediate"]);
            tokio::time::sleep(outage).await; // the outage itself
            services(&["pg-start"]);
            Injected {
                recover: vec![time_to_recover(&env, &flood).await],
                daemon,
                faults: 1,
            }
        }
        Fault::ThreeReplicasTermAndKill => {
            let a = procs.spawn(&env, &config);
            let b = procs.spawn(&env, &config);
            let c = procs.spawn(&env, &config);
            until_stored(&env, flood.valid / 4).await;
            procs.stop(a).await; // SIGTERM: drains and exits 0
            until_stored(&env, flood.valid / 2).await;
            procs.kill9(b).await;
            Injected {
                recover: vec![time_to_recover(&env, &flood).await],
                daemon: c,
                faults: 2,
            }
        }
        Fault::CrashingMessages => {
            // A supervisor's job: restart the daemon whenever it dies, until every message has
            // its outcome.
            let (valid, invalid) = (flood.valid, flood.invalid());
            let (crashes, daemon) = kit::process::supervise(
                || procs.spawn(&env, &config),
                "every record stored or rejected",
                WAIT,
                || async {
                    stored(&env).await == valid
                        && env.count("SELECT count(*) FROM rejections").await == invalid
                },
            )
            .await;
            let daemon = daemon.unwrap_or_else(|| procs.spawn(&env, &config));
            let limit = env.settings(&[]).crash_limit;
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
            Injected {
                recover: vec![],
                daemon,
                faults: i64::from(crashes),
            }
        }
        Fault::ClusterLeaderStopped => {
            let node = leader.expect("the leader, found before the start");
            let daemon = procs.spawn(&env, &config);
            until_stored(&env, flood.valid / 3).await;
            services(&["rabbit-node-stop", node]);
            let recover = vec![time_to_recover(&env, &flood).await];
            until_stored(&env, flood.valid * 2 / 3).await;
            services(&["rabbit-node-start", node]);
            Injected {
                recover,
                daemon,
                faults: 1,
            }
        }
    };
    until_done(&env, &flood).await;
    consumes_again(&env, &mut flood).await;
    procs.stop(injected.daemon).await;
    let mut row = audit(&env, &flood, &procs, injected.faults, scenario.prefetch).await;
    row.scenario = scenario.name;
    row.recover = injected.recover;
    row.elapsed = started.elapsed();
    row.print();
    env.cleanup().await;
}

/// Two records that abort the process handling them, early in the flood among innocent messages;
/// they count as rejected `poison`.
fn plant_crashers(flood: &mut Flood) {
    let crasher = || {
        let mut r = record(vs_items());
        r["entered_by"] = serde_json::json!(edc_ingest::fault::ABORT_MARKER);
        r.to_string()
    };
    flood.lines.insert(1000, crasher());
    flood.lines.insert(5000, crasher());
    *flood.rejected.entry("poison".into()).or_insert(0) += 2;
}

/// The node (1, 2 or 3) that leads the work queue's replicas; checks that there is one on each.
fn leader_node(env: &TestEnv) -> &'static str {
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
    match leader.split('@').next() {
        Some(name) if name == format!("{base}2") => "2",
        Some(name) if name == format!("{base}3") => "3",
        _ => "1",
    }
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
