//! The daemon processes of a chaos scenario, started through the kit, and their logs.

use std::time::Duration;

use crate::helpers::*;

/// The daemon processes of a scenario (the real binary, through the kit), their output in files
/// named after them (`p1.out`, `p1.err`, ...), and the summary lines of those that exited.
pub struct Procs {
    pub dir: tempfile::TempDir,
    pub started: usize,
    pub summaries: Vec<String>,
}

/// How long a daemon may take to exit after SIGTERM (it drains within `shutdown_grace`, 10 s).
const STOP_WAIT: Duration = Duration::from_secs(120);

impl Procs {
    pub fn new() -> Procs {
        Procs {
            // EDC_CHAOS_LOGS=DIR keeps the daemons' logs there (one folder per scenario).
            dir: match std::env::var_os("EDC_CHAOS_LOGS") {
                Some(root) => {
                    std::fs::create_dir_all(&root).unwrap();
                    tempfile::Builder::new()
                        .prefix("daemons-")
                        .disable_cleanup(true)
                        .tempdir_in(root)
                        .unwrap()
                }
                None => tempfile::tempdir().unwrap(),
            },
            started: 0,
            summaries: Vec::new(),
        }
    }

    /// Starts a daemon (`edc-ingest run`) on the scenario's world with `extra` settings.
    pub fn spawn(&mut self, env: &TestEnv, extra: &[(&str, &str)]) -> DaemonProcess {
        self.started += 1;
        let name = format!("p{}", self.started);
        let out = self.dir.path().join(format!("{name}.out"));
        let err = self.dir.path().join(format!("{name}.err"));
        launch(env, extra)
            .name(name)
            .args(["run"])
            .output_to(out, err)
            .spawn()
    }

    /// Keeps the summary line of a process that exited, if it printed one.
    fn keep(&mut self, exit: &Exit) {
        if let Some(line) = exit.summary() {
            self.summaries.push(line.to_string());
        }
    }

    /// SIGTERM, then wait: a graceful stop must exit 0.
    pub async fn stop(&mut self, p: DaemonProcess) {
        let name = p.name().to_string();
        let exit = p.stop(STOP_WAIT).await;
        self.keep(&exit);
        assert_eq!(exit.code(), Some(0), "{name} exits 0 after SIGTERM");
    }

    pub async fn kill9(&mut self, p: DaemonProcess) {
        let exit = p.kill().await;
        self.keep(&exit);
    }

    /// Duplicates the daemons recognised, from the summaries of those that exited cleanly.
    pub fn duplicates(&self) -> u64 {
        self.summaries
            .iter()
            .map(|s| summary_field(s, "duplicate").unwrap_or(0))
            .sum()
    }
}

/// A failing scenario shows the end of every daemon's log: its temporary folder goes with it.
impl Drop for Procs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for n in 1..=self.started {
            for ext in ["out", "err"] {
                let path = self.dir.path().join(format!("p{n}.{ext}"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(80)..];
                if !tail.is_empty() {
                    eprintln!(
                        "---- p{n}.{ext}: last {} of {} lines",
                        tail.len(),
                        lines.len()
                    );
                    for line in tail {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}
