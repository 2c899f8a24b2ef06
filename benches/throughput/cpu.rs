//! CPU time from `/proc`: of one process (the daemon), of the servers under test (the broker and
//! the PostgreSQL cluster the bench talks to, told apart from others on the machine) and of the
//! whole machine.

use std::path::Path;

/// Clock ticks per second, for `/proc/<pid>/stat` (`getconf CLK_TCK`, normally 100).
pub fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// User plus system CPU seconds of a `/proc/<pid>/stat` file, if it is readable.
pub fn stat_cpu_seconds(path: &Path) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks() as f64)
}

/// The processes of the servers under test, where they could be told apart from other RabbitMQ
/// nodes and PostgreSQL clusters on the same machine.
#[derive(Clone, Copy, Debug, Default)]
struct Servers {
    /// The `beam.smp` whose `RABBITMQ_NODE_PORT` is the AMQP URL's port.
    broker: Option<u32>,
    /// The postmaster: the parent of one of our backends.
    postmaster: Option<u32>,
}

static SERVERS: std::sync::OnceLock<Servers> = std::sync::OnceLock::new();

/// Finds the broker and the PostgreSQL cluster the bench talks to, so that [`CpuSample`] counts
/// theirs alone. Without it (or if one is not found) every process of that name counts.
pub async fn identify_servers() {
    let port = url::Url::parse(&crate::world::amqp_url())
        .ok()
        .and_then(|u| u.port())
        .unwrap_or(5672)
        .to_string();
    let wanted = format!("RABBITMQ_NODE_PORT={port}");
    let broker = procs()
        .filter(|(_, comm)| comm == "beam.smp")
        .find(|(pid, _)| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            env.split(|b| *b == 0).any(|v| v == wanted.as_bytes())
        })
        .map(|(pid, _)| pid);
    let postmaster = async {
        let db = crate::world::pg(&crate::world::pg_url()).await.ok()?;
        let backend: i32 = db
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .ok()?
            .get(0);
        stat_ppid(backend as u32)
    }
    .await;
    if broker.is_none() || postmaster.is_none() {
        eprintln!(
            "[bench] warning: the CPU figures count every RabbitMQ node (ours found: {}) and PostgreSQL cluster (ours found: {}) on this machine",
            broker.is_some(),
            postmaster.is_some()
        );
    }
    let _ = SERVERS.set(Servers { broker, postmaster });
}

/// (pid, command name) of every process.
fn procs() -> impl Iterator<Item = (u32, String)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some((pid, comm.trim().to_string()))
        })
}

/// The parent of a process (`/proc/<pid>/stat` field 4).
fn stat_ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds used so far by the broker (`beam.smp`), by PostgreSQL (the postmaster and its
/// children) and by the whole machine (busy time in `/proc/stat`). A process that starts and ends
/// between two samples (an autovacuum worker) is missed; the machine figure catches everything,
/// other users of the machine included.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSample {
    pub broker: f64,
    pub postgres: f64,
    pub machine: f64,
}

impl CpuSample {
    pub fn now() -> CpuSample {
        let servers = SERVERS.get().copied().unwrap_or_default();
        let mut s = CpuSample::default();
        for (pid, comm) in procs() {
            let slot = match comm.as_str() {
                "beam.smp" if servers.broker.is_none_or(|b| b == pid) => &mut s.broker,
                "postgres"
                    if servers
                        .postmaster
                        .is_none_or(|pm| pm == pid || stat_ppid(pid) == Some(pm)) =>
                {
                    &mut s.postgres
                }
                _ => continue,
            };
            *slot += stat_cpu_seconds(Path::new(&format!("/proc/{pid}/stat"))).unwrap_or(0.0);
        }
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        if let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) {
            // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
            let v: Vec<f64> = cpu
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let busy: f64 = v
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4)
                .take(7)
                .map(|(_, x)| x)
                .sum();
            s.machine = busy / clock_ticks() as f64;
        }
        s
    }
}
