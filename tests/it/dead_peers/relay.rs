//! The relay's connection (the one holding its advisory lock) cut with iptables, on loopback, both
//! ways and for that one connection only (other tests use the same servers). Without keepalives on
//! both ends, the server would keep the vanished relay's backend, and its lock, for about two
//! hours, and no replica would relay events.
//!
//! The rules are removed when the [`Cut`] is dropped, also when the test fails. The tests skip,
//! saying so, only where there is no `iptables` (`scripts/test.sh` installs it); they need root.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// Startup, and anything that is not the failover.
const WAIT: Duration = Duration::from_secs(60);
/// From the cut to the events of the records stored after it: the server gives the silent
/// backend up within keepalives_idle + keepalives_interval x keepalives_count (5 s here) or
/// tcp_user_timeout (10 s) when it had data in flight; a waiting relay asks for the lock every
/// second.
const FAILOVER: Duration = Duration::from_secs(30);

/// Dead-peer settings of the tests: seconds rather than the defaults' tens of seconds. The relay's
/// own bound (statement_timeout 2s + relay_heartbeat 1s) is below tcp_user_timeout, so the relay
/// notices a silent connection by its heartbeat before TCP does.
const FAST: [(&str, &str); 7] = [
    ("EDC__POSTGRES__DEAD_PEERS__KEEPALIVES_IDLE", "2s"),
    ("EDC__POSTGRES__DEAD_PEERS__KEEPALIVES_INTERVAL", "1s"),
    ("EDC__POSTGRES__DEAD_PEERS__KEEPALIVES_COUNT", "3"),
    ("EDC__POSTGRES__DEAD_PEERS__TCP_USER_TIMEOUT", "10s"),
    ("EDC__POSTGRES__DEAD_PEERS__RELAY_HEARTBEAT", "1s"),
    ("EDC__POSTGRES__STATEMENT_TIMEOUT", "2s"),
    ("EDC__LOG__FORMAT", "json"),
];

/// Every packet of one TCP connection on loopback dropped, both ways, until dropped itself.
struct Cut {
    rules: Vec<Vec<String>>,
}

impl Cut {
    /// Cuts the connection between the client port `client` and the server port `server`.
    fn new(client: u16, server: u16) -> Cut {
        let rule = |from: u16, to: u16| -> Vec<String> {
            ["-p", "tcp", "-s", "127.0.0.1", "-d", "127.0.0.1"]
                .into_iter()
                .map(String::from)
                .chain([
                    "--sport".into(),
                    from.to_string(),
                    "--dport".into(),
                    to.to_string(),
                    "-j".into(),
                    "DROP".into(),
                ])
                .collect()
        };
        let cut = Cut {
            rules: vec![rule(client, server), rule(server, client)],
        };
        for r in &cut.rules {
            let out = Command::new("iptables")
                .args(["-I", "INPUT"])
                .args(r)
                .output()
                .expect("iptables runs");
            assert!(
                out.status.success(),
                "iptables -I INPUT {}: {} (the test needs root)",
                r.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cut
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for r in &self.rules {
            let removed = Command::new("iptables")
                .args(["-D", "INPUT"])
                .args(r)
                .status();
            if !removed.is_ok_and(|s| s.success()) {
                eprintln!(
                    "warning: could not remove the rule `iptables -D INPUT {}`: remove it by hand",
                    r.join(" ")
                );
            }
        }
    }
}

/// Whether `iptables` can be run at all; if not, the test says so and is skipped.
fn iptables_present(test: &str) -> bool {
    let present = Command::new("iptables").arg("-V").output().is_ok();
    if !present {
        eprintln!("SKIPPED {test}: no iptables on this machine (scripts/test.sh installs it)");
    }
    present
}

/// The backend holding the relay lock in this test's database: its pid and its client's port.
async fn relay_backend(env: &TestEnv) -> Option<(i32, u16)> {
    let row = env
        .db()
        .await
        .query_opt(
            "SELECT l.pid, a.client_port FROM pg_locks l JOIN pg_stat_activity a USING (pid)
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
               AND (l.classid::int8 << 32 | l.objid::int8) = $1
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&edc_ingest::relay::RELAY_LOCK],
        )
        .await
        .unwrap()?;
    Some((row.get(0), u16::try_from(row.get::<_, i32>(1)).ok()?))
}

async fn backend_alive(env: &TestEnv, pid: i32) -> bool {
    env.db()
        .await
        .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
        .await
        .unwrap()
        .is_some()
}

/// The port of the test's PostgreSQL server.
fn server_port() -> u16 {
    url::Url::parse(&pg_url()).unwrap().port().unwrap_or(5432)
}

/// Publishes `n` records named `{tag}-{i}`; their record ids.
async fn publish_records(env: &TestEnv, tag: &str, n: usize) -> HashSet<String> {
    let records: Vec<Value> = (0..n).map(|_| record(vs_items())).collect();
    let bodies: Vec<(String, Vec<u8>)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("{tag}-{i}"), bytes(r)))
        .collect();
    env.publish(&bodies).await;
    records
        .iter()
        .map(|r| r["record_id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits up to `within` until `queue` has received a `record.accepted` event for each of `ids`
/// (taking what it holds); the time it took, or what is still missing.
async fn announced(
    env: &TestEnv,
    queue: &str,
    ids: &HashSet<String>,
    within: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut seen = HashSet::new();
    loop {
        for m in env.drain(queue).await {
            let body: Value = serde_json::from_slice(&m.delivery.data).unwrap();
            if let Some(id) = body["record_id"].as_str() {
                seen.insert(id.to_string());
            }
        }
        let missing = ids.difference(&seen).count();
        if missing == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            return Err(format!(
                "{missing} of {} events not published within {within:?}",
                ids.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The relay in this world once it holds the lock, and the daemon it belongs to (which logs the
/// backend's pid when it takes the lock).
async fn the_relay(env: &TestEnv, daemons: &[&DaemonProcess]) -> (i32, u16, usize) {
    wait_for("a relay holds the lock", WAIT, || async {
        relay_backend(env).await.is_some()
    })
    .await;
    let (pid, port) = relay_backend(env).await.unwrap();
    let said = format!("\"backend_pid\":{pid}");
    let mut owner = None;
    wait_for("the relay's daemon says it leads", WAIT, || {
        owner = daemons.iter().position(|d| d.output().contains(&said));
        let found = owner.is_some();
        async move { found }
    })
    .await;
    (pid, port, owner.unwrap())
}

#[tokio::test]
async fn a_relay_whose_connection_goes_silent_stops_and_relays_again_only_on_a_live_one() {
    if !iptables_present("a_relay_whose_connection_goes_silent") {
        return;
    }
    // Arrange: one daemon, relaying.
    let env = TestEnv::new().await;
    let events = env.listen_events("record.accepted").await;
    let mut daemon = run_daemon(&env, &FAST);
    daemon.wait_ready(WAIT).await;
    let (pid, port, _) = the_relay(&env, &[&daemon]).await;
    let before = publish_records(&env, "before", 3).await;
    announced(&env, &events, &before, WAIT).await.unwrap();

    // Act: its lock connection goes silent; the process lives on.
    let cut = Cut::new(port, server_port());
    let after = publish_records(&env, "after", 10).await;
    let took = announced(&env, &events, &after, FAILOVER).await;

    // Assert: the events went out within the bound; the relay took its connection for dead by its
    // own bound; the server ended the silent backend (releasing the lock); and the same daemon
    // relays again, on a new connection.
    let took = took.unwrap_or_else(|e| panic!("{e}: {}", daemon.tail(20)));
    let output = daemon.output();
    assert!(
        output.contains("taken as dead"),
        "the relay noticed by its heartbeat: {}",
        daemon.tail(20)
    );
    assert!(
        !backend_alive(&env, pid).await,
        "the server ended backend {pid}"
    );
    let (new_pid, _) = relay_backend(&env).await.expect("the lock is held again");
    assert_ne!(new_pid, pid, "the lock is held on a new connection");
    eprintln!("events published again {took:?} after the cut (bound {FAILOVER:?})");
    drop(cut);
    assert!(daemon.stop(WAIT).await.success());
    env.cleanup().await;
}

#[tokio::test]
async fn a_relay_whose_node_is_lost_is_replaced_by_another_replica() {
    if !iptables_present("a_relay_whose_node_is_lost") {
        return;
    }
    // Arrange: two replicas; one relays.
    let env = TestEnv::new().await;
    let events = env.listen_events("record.accepted").await;
    let mut first = run_daemon(&env, &FAST);
    first.wait_ready(WAIT).await;
    let mut second = run_daemon(&env, &FAST);
    second.wait_ready(WAIT).await;
    let (pid, port, leader) = the_relay(&env, &[&first, &second]).await;
    let (leader, standby) = if leader == 0 {
        (first, second)
    } else {
        (second, first)
    };
    let before = publish_records(&env, "before", 3).await;
    announced(&env, &events, &before, WAIT).await.unwrap();

    // Act: the relay's node is lost. Its lock connection goes silent first, then the process
    // dies: the reset its kernel sends on that connection is dropped too, as a lost node sends
    // none. Its other connections close as usual.
    let cut = Cut::new(port, server_port());
    leader.kill().await;
    let after = publish_records(&env, "after", 20).await;
    let took = announced(&env, &events, &after, FAILOVER).await;

    // Assert: the other replica relays the records stored after the loss, within the bound.
    let took = took.unwrap_or_else(|e| panic!("{e}: {}", standby.tail(20)));
    assert!(
        !backend_alive(&env, pid).await,
        "the server ended backend {pid}"
    );
    let (new_pid, _) = relay_backend(&env).await.expect("the lock is held again");
    let said = format!("\"backend_pid\":{new_pid}");
    assert!(
        standby.output().contains(&said),
        "the other replica relays: {}",
        standby.tail(20)
    );
    eprintln!(
        "the other replica published the events {took:?} after the node loss (bound {FAILOVER:?})"
    );
    drop(cut);
    assert!(standby.stop(WAIT).await.success());
    env.cleanup().await;
}
