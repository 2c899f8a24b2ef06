//! The ODM paths: `edc-ingest odm import` of a generated ODM file (`generate --odm`, DEMO-001
//! forms of about 600 bytes, 2 % refused by the mapping and 5 % queried), its rate and peak RSS;
//! then the daemon draining those ODM messages, the same number of edc.crf.v1 JSON records, and a
//! backlog of both, each with the default configuration on a fresh world.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use crate::daemon::{self, DaemonConfig, Drain};
use crate::data::{self, Message};
use crate::world::World;

#[derive(Clone, Debug, Serialize)]
pub struct Import {
    pub file_bytes: u64,
    pub forms_read: u64,
    pub published: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub forms_per_s: f64,
    /// VmHWM of the import process, sampled every 20 ms until it exits.
    pub peak_rss_kib: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Odm {
    pub import: Import,
    /// The daemon draining the import's messages (one form each).
    pub odm_drain: Drain,
    /// The same number of JSON records, drained the same way.
    pub json_drain: Drain,
    /// Half JSON records, then half ODM messages, in one backlog.
    pub mixed_drain: Drain,
}

/// Runs the stage with `forms` ODM forms (and as many JSON records); the generated file is kept in
/// `logs` (removed at the end).
pub async fn run(data: &[Message], forms: usize, config: DaemonConfig, logs: &Path) -> Result<Odm> {
    let file = logs.join("odm-import.xml");
    generate(&file, forms)?;
    let half = logs.join("odm-half.xml");
    generate(&half, forms / 2)?;
    let result = async {
        let timeout = Duration::from_secs(120 + forms as u64 / 200);

        let world = World::full("odm").await?;
        let run = async {
            let import = run_import(&world, &file, logs).await?;
            let log = logs.join("odm-drain.log");
            let drain = daemon::drain(&world, config, import.published, timeout, &log).await?;
            Ok::<_, anyhow::Error>((import, drain))
        }
        .await;
        world.cleanup().await;
        let (import, odm_drain) = run?;
        let n = import.published as usize;

        let world = World::full("odmjson").await?;
        let json = async {
            data::preload(&world, data, n, false).await?;
            let log = logs.join("odm-json-drain.log");
            daemon::drain(&world, config, n as u64, timeout, &log).await
        }
        .await;
        world.cleanup().await;
        let json_drain = json?;

        let world = World::full("odmmixed").await?;
        let mixed = async {
            data::preload(&world, data, n / 2, false).await?;
            let odm = run_import(&world, &half, logs).await?;
            let total = (n / 2) as u64 + odm.published;
            let log = logs.join("odm-mixed-drain.log");
            daemon::drain(&world, config, total, timeout, &log).await
        }
        .await;
        world.cleanup().await;
        let mixed_drain = mixed?;
        Ok(Odm {
            import,
            odm_drain,
            json_drain,
            mixed_drain,
        })
    }
    .await;
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&half);
    if let Ok(r) = &result {
        let i = &r.import;
        eprintln!(
            "[bench] odm import: {} forms ({:.1} MB) in {:.2} s = {:.1} MB/s, {:.0} forms/s, peak RSS {} KiB; drains (records/s): ODM {:.0}, JSON {:.0}, mixed {:.0}",
            i.published,
            i.file_bytes as f64 / 1e6,
            i.seconds,
            i.mb_per_s,
            i.forms_per_s,
            i.peak_rss_kib,
            r.odm_drain.rate,
            r.json_drain.rate,
            r.mixed_drain.rate
        );
    }
    result
}

/// `edc-ingest generate --odm --count N` into `file`.
fn generate(file: &Path, forms: usize) -> Result<()> {
    let out =
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    let status = std::process::Command::new(crate::world::binary())
        .args([
            "generate",
            "--odm",
            "--count",
            &forms.to_string(),
            "--seed",
            "20",
        ])
        .stdout(out)
        .stderr(Stdio::null())
        .status()
        .context("running edc-ingest generate --odm")?;
    if !status.success() {
        bail!("edc-ingest generate --odm failed: {status}");
    }
    Ok(())
}

/// `edc-ingest odm import FILE --output json` into the world's queue, timed, its peak RSS sampled.
async fn run_import(world: &World, file: &Path, logs: &Path) -> Result<Import> {
    let file_bytes = std::fs::metadata(file)?.len();
    let report = logs.join("odm-import-report.json");
    let started = Instant::now();
    let mut child = std::process::Command::new(crate::world::binary())
        .args(["odm", "import"])
        .arg(file)
        .args(["--output", "json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(world.env())
        .env("EDC__STUDIES_DIR", crate::world::studies_dir())
        .stdout(std::fs::File::create(&report)?)
        .stderr(std::fs::File::create(logs.join("odm-import.log"))?)
        .spawn()
        .context("running edc-ingest odm import")?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_rss_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(kib) = std::fs::read_to_string(&status_path)
            .ok()
            .and_then(|s| daemon::vm_hwm_kib(&s))
        {
            peak_rss_kib = peak_rss_kib.max(kib);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&report)?;
    // Exit 1: some forms refused by the mapping (generate --odm makes 2 % of them so).
    if !matches!(status.code(), Some(0 | 1)) {
        bail!("odm import failed ({status}): {text}");
    }
    let r: serde_json::Value = serde_json::from_str(&text).context("odm import's JSON report")?;
    let published = r["published"].as_u64().context("published in the report")?;
    let forms_read = r["forms_read"].as_u64().unwrap_or(0);
    Ok(Import {
        file_bytes,
        forms_read,
        published,
        seconds,
        mb_per_s: file_bytes as f64 / 1e6 / seconds,
        forms_per_s: published as f64 / seconds,
        peak_rss_kib,
    })
}
