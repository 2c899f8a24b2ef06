//! The daemon binary (or one of its commands) as a child process.
//!
//! [`Launch`] names the binary (the tests pass `env!("CARGO_BIN_EXE_edc-ingest")`, the benchmark
//! its copy of the release build), the arguments and the variables. The environment starts empty
//! but for `PATH` (a variable of the caller's shell cannot change the configuration under test)
//! unless [`Launch::inherit_env`] keeps some. The output goes to files, never to a pipe nobody
//! reads (which would fill up and block the daemon): a private temporary folder, or the files
//! given with [`Launch::output_to`].
//!
//! [`DaemonProcess`] sends signals, waits with a bound for the daemon to be ready, for a line of
//! output or for the exit, and gives the exit status with everything it printed ([`Exit`]). Dropped
//! while the process still runs, it kills it (SIGKILL) and reaps it.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http;
pub use super::launch::Launch;
use super::wait::POLL;

/// How long a process may take to go once it has been sent SIGKILL.
const AFTER_KILL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// A graceful stop: the daemon drains and exits 0.
    Term,
    /// A crash: nothing is drained.
    Kill,
    /// Reload the study protocols.
    Hup,
}

impl Signal {
    fn flag(self) -> &'static str {
        match self {
            Signal::Term => "-TERM",
            Signal::Kill => "-KILL",
            Signal::Hup => "-HUP",
        }
    }
}

/// How a process ended, and everything it printed.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Exit {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The daemon's summary line (`edc-ingest stopped after ...`), if it printed one.
    pub fn summary(&self) -> Option<&str> {
        self.stdout
            .lines()
            .find(|l| l.contains("edc-ingest stopped after"))
    }
}

/// A running child process of the binary. Killed (SIGKILL) and reaped when dropped.
pub struct DaemonProcess {
    pub(super) child: Child,
    pub(super) name: String,
    pub(super) stdout: PathBuf,
    pub(super) stderr: PathBuf,
    /// The private folder of its output, removed with it ([`Launch::output_to`] gives none).
    pub(super) folder: Option<tempfile::TempDir>,
    pub started: Instant,
}

impl DaemonProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pipe to its stdin ([`Launch::stdin_piped`]); dropping it closes the pipe.
    pub fn stdin(&mut self) -> ChildStdin {
        self.child
            .stdin
            .take()
            .unwrap_or_else(|| panic!("{}: stdin was not piped, or already taken", self.name))
    }

    /// Sends a signal; an error if `kill` could not deliver it (the process is gone).
    pub fn try_signal(&self, signal: Signal) -> Result<(), String> {
        let status = Command::new("kill")
            .args([signal.flag(), &self.pid().to_string()])
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("running kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill {} {} failed", signal.flag(), self.name))
        }
    }

    /// Sends a signal; fails the test if it cannot be delivered.
    pub fn signal(&self, signal: Signal) {
        if let Err(e) = self.try_signal(signal) {
            panic!("{e}");
        }
    }

    /// Its exit status if it has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("{}: waiting for the process: {e}", self.name))
    }

    /// Everything it has written to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Everything it has written to stderr so far (its logs).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its output so far: stdout, then stderr (once if they share a file).
    pub fn output(&self) -> String {
        if self.stdout == self.stderr {
            self.stdout()
        } else {
            self.stdout() + &self.stderr()
        }
    }

    /// The last `n` non-empty lines of its output, for a failure message.
    pub fn tail(&self, n: usize) -> String {
        let text = self.output();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Where its stdout goes.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// Waits up to `within` for it to exit: its status, or None if it still runs.
    pub async fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to `within` for it to exit; fails the test, showing the end of its output, if it
    /// does not (it is then killed on drop).
    pub async fn wait_exit(mut self, within: Duration) -> Exit {
        match self.exit_within(within).await {
            Some(status) => Exit {
                status,
                stdout: self.stdout(),
                stderr: self.stderr(),
            },
            None => panic!(
                "{} did not exit within {within:?}; its last lines:\n{}",
                self.name,
                self.tail(20)
            ),
        }
    }

    /// Waits up to `within` for it to exit, blocking the thread, as `Command::output` would (for
    /// a command run from code that is not async); fails the test if it does not exit in time.
    pub fn output_within(mut self, within: Duration) -> std::process::Output {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return std::process::Output {
                    status,
                    stdout: std::fs::read(&self.stdout).unwrap_or_default(),
                    stderr: std::fs::read(&self.stderr).unwrap_or_default(),
                };
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}; its last lines:\n{}",
                self.name,
                self.tail(20)
            );
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then waits up to `within` for the exit (the caller checks the status).
    pub async fn stop(self, within: Duration) -> Exit {
        self.signal(Signal::Term);
        self.wait_exit(within).await
    }

    /// SIGKILL, then waits for the exit.
    pub async fn kill(self) -> Exit {
        self.signal(Signal::Kill);
        self.wait_exit(AFTER_KILL).await
    }

    /// Waits up to `within` until its output holds `needle`; fails the test if it does not, or if
    /// the process exits first.
    pub async fn wait_output(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.output().contains(needle) {
                return;
            }
            if let Some(status) = self.exited() {
                // It may have written the line just before exiting.
                assert!(
                    self.output().contains(needle),
                    "{} exited ({status}) without printing {needle:?}; its last lines:\n{}",
                    self.name,
                    self.tail(20)
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {} to print {needle:?}; its last lines:\n{}",
                self.name,
                self.tail(20)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The port of its HTTP listener, from the line it logs when it listens (with port 0 in
    /// `http.listen`, the port it was given); None until then.
    pub fn listen_port(&self) -> Option<u16> {
        let logs = self.stderr();
        let line = logs.lines().find(|l| l.contains("HTTP listener"))?;
        let at = line
            .find("addr=")
            .map(|i| i + "addr=".len())
            .or_else(|| line.find("\"addr\":\"").map(|i| i + "\"addr\":\"".len()))?;
        let addr: String = line[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
            .collect();
        addr.rsplit(':').next()?.parse().ok()
    }

    /// Waits up to `within` until `/readyz` answers 200 (connected, consuming, the database gate
    /// open): the port of its HTTP listener. Fails the test if the process exits first.
    pub async fn wait_ready(&mut self, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before it was ready; its last lines:\n{}",
                    self.name,
                    self.tail(20)
                );
            }
            if let Some(port) = self.listen_port()
                && matches!(http::get(port, "/readyz").await, Some((200, _)))
            {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {} to be ready (/readyz 200); its last lines:\n{}",
                self.name,
                self.tail(20)
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A failing test shows what a daemon with a private output folder said: the folder goes.
        if self.folder.is_some() && std::thread::panicking() {
            let tail = self.tail(40);
            if !tail.is_empty() {
                eprintln!("---- {}: its last lines\n{tail}", self.name);
            }
        }
    }
}

/// A supervisor's job: starts the daemon with `start` and again whenever it dies (each death must
/// be a failure, a crash), until `done` holds; fails the test after `within`, saying what it waited
/// for. Returns how many times it died and the process still running, or None if it died just as
/// `done` came true (that death is counted too).
pub async fn supervise<S, F, Fut>(
    mut start: S,
    what: &str,
    within: Duration,
    mut done: F,
) -> (u32, Option<DaemonProcess>)
where
    S: FnMut() -> DaemonProcess,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    let mut crashes = 0;
    let mut daemon = start();
    loop {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what} ({crashes} crashes so far)"
        );
        if let Some(status) = daemon.exited() {
            assert!(
                !status.success(),
                "{} died of the crasher: {status}",
                daemon.name()
            );
            crashes += 1;
            daemon = start();
            continue;
        }
        if done().await {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // A daemon that died just as the condition came true counts too.
    if let Some(status) = daemon.exited() {
        assert!(
            !status.success(),
            "{} died of the crasher: {status}",
            daemon.name()
        );
        return (crashes + 1, None);
    }
    (crashes, Some(daemon))
}
