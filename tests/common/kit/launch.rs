//! How to start the binary (or one of its commands) as a child process: [`Launch`], which
//! [`super::process`] re-exports with the [`DaemonProcess`] it starts.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::process::DaemonProcess;

/// How to start the binary.
#[derive(Clone, Debug)]
pub struct Launch {
    program: PathBuf,
    name: String,
    args: Vec<String>,
    vars: Vec<(String, String)>,
    inherit: Option<fn(&str) -> bool>,
    dir: Option<PathBuf>,
    stdin: bool,
    output: Option<(PathBuf, PathBuf)>,
}

impl Launch {
    /// The binary at `program`, no arguments, an empty environment but for `PATH`.
    pub fn new(program: impl Into<PathBuf>) -> Launch {
        Launch {
            program: program.into(),
            name: "edc-ingest".into(),
            args: Vec::new(),
            vars: Vec::new(),
            inherit: None,
            dir: None,
            stdin: false,
            output: None,
        }
    }

    /// What messages call it (`p1`, `the daemon`); the binary's name by default.
    pub fn name(mut self, name: impl Into<String>) -> Launch {
        self.name = name.into();
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Adds variables; a later one wins over an earlier one of the same name.
    pub fn envs<I, K, V>(mut self, vars: I) -> Launch
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        self.vars.extend(
            vars.into_iter()
                .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())),
        );
        self
    }

    /// Keeps the caller's variables whose names `keep` accepts (instead of `PATH` alone).
    pub fn inherit_env(mut self, keep: fn(&str) -> bool) -> Launch {
        self.inherit = Some(keep);
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Launch {
        self.dir = Some(dir.into());
        self
    }

    /// A pipe to its stdin (else it reads nothing): see [`DaemonProcess::stdin`].
    pub fn stdin_piped(mut self) -> Launch {
        self.stdin = true;
        self
    }

    /// Its stdout and stderr go to these files (the same path twice: one file for both), which
    /// outlive the process. Without this, they go to a temporary folder removed with the
    /// [`DaemonProcess`].
    pub fn output_to(mut self, stdout: impl Into<PathBuf>, stderr: impl Into<PathBuf>) -> Launch {
        self.output = Some((stdout.into(), stderr.into()));
        self
    }

    /// Starts it; panics, naming the binary, if it cannot be started.
    pub fn spawn(self) -> DaemonProcess {
        let what = format!("{} ({})", self.name, self.program.display());
        self.try_spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"))
    }

    pub fn try_spawn(self) -> std::io::Result<DaemonProcess> {
        let (folder, stdout, stderr) = match self.output {
            Some((out, err)) => (None, out, err),
            None => {
                let dir = tempfile::tempdir()?;
                let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
                (Some(dir), out, err)
            }
        };
        let out = File::create(&stdout)?;
        let err = if stderr == stdout {
            out.try_clone()?
        } else {
            File::create(&stderr)?
        };
        let mut cmd = Command::new(&self.program);
        cmd.env_clear();
        match self.inherit {
            Some(keep) => {
                cmd.envs(std::env::vars().filter(|(k, _)| keep(k)));
            }
            None => {
                cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
            }
        }
        cmd.envs(self.vars.iter().map(|(k, v)| (k, v)))
            .args(&self.args)
            .stdin(if self.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(out)
            .stderr(err);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn()?;
        Ok(DaemonProcess {
            child,
            name: self.name,
            stdout,
            stderr,
            folder,
            started: Instant::now(),
        })
    }
}
