//! What the figures were measured on: CPUs, memory, kernel, RabbitMQ, PostgreSQL and its
//! durability settings, the load, the commit.

use anyhow::Result;
use serde::Serialize;

use crate::world::{management, pg, pg_url, repo};

/// What the figures were measured on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub mem_total_kib: u64,
    pub cpu_model: String,
    pub kernel: String,
    pub rabbitmq_version: String,
    pub erlang_version: String,
    pub postgres_version: String,
    /// fsync, synchronous_commit, full_page_writes, wal_level, shared_buffers, max_connections.
    pub postgres_settings: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub git_commit: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub async fn machine() -> Machine {
    let meminfo = read("/proc/meminfo");
    let mem_total_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let overview = management("/api/overview").unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("unknown").to_string();
    let (postgres_version, postgres_settings) = match postgres_info().await {
        Ok(v) => v,
        Err(e) => (format!("unknown ({e})"), String::new()),
    };
    let git = std::process::Command::new("git")
        .args([
            "-C",
            &repo().display().to_string(),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total_kib,
        cpu_model,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
        rabbitmq_version: text(&overview["rabbitmq_version"]),
        erlang_version: text(&overview["erlang_version"]),
        postgres_version,
        postgres_settings,
        loadavg_start: loadavg(),
        loadavg_end: String::new(),
        git_commit: git,
    }
}

async fn postgres_info() -> Result<(String, String)> {
    let c = pg(&pg_url()).await?;
    let version: String = c.query_one("SHOW server_version", &[]).await?.get(0);
    // "15.18 (Debian 15.18-0+deb12u1)" -> "15.18"
    let version = version.split_whitespace().next().unwrap_or("").to_string();
    let mut settings = Vec::new();
    for name in [
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_level",
        "shared_buffers",
        "max_connections",
    ] {
        let v: String = c.query_one(&format!("SHOW {name}"), &[]).await?.get(0);
        settings.push(format!("{name}={v}"));
    }
    Ok((version, settings.join(" ")))
}
