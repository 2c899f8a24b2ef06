//! From the parsed command line to the exit code: the commands that need no settings
//! (`completions`, `generate`, `healthcheck`) run at once; for the others the settings are loaded,
//! logging and traces set up, the command run on a one-thread runtime ([`super::run`]) and a
//! failure printed. Exit codes: 0 success, 1 runtime failure, 2 configuration error.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use edc_ingest::config::Settings;
use edc_ingest::failure::Failure;
use edc_ingest::tools::progress::Progress;
use edc_ingest::{telemetry, tools};

use super::{Cli, Command};

/// Runs the command `cli` names and says how the process ends.
pub fn start(cli: Cli) -> ExitCode {
    if let Command::Completions { shell } = cli.command {
        let mut out = std::io::stdout().lock();
        let written = out
            .write_all(&super::completions(shell))
            .and_then(|_| out.flush());
        return printed("completions", written);
    }
    if let Command::Generate {
        count,
        seed,
        invalid_ratio,
        queried_ratio,
        duplicate_ratio,
        batch_size,
        odm,
    } = cli.command
    {
        let opts = tools::generate::Options {
            count,
            seed,
            invalid_ratio,
            queried_ratio,
            duplicate_ratio,
            batch_size: batch_size.max(1),
        };
        let stdout = std::io::stdout();
        // Progress only when the records go elsewhere than the terminal it would be drawn on.
        let progress = if stdout.is_terminal() {
            Progress::hidden()
        } else {
            Progress::bar(count as u64, "records")
        };
        let mut out = std::io::BufWriter::new(stdout.lock());
        let written = if odm {
            tools::generate_odm::generate_with_progress(&opts, &mut out, &progress)
        } else {
            tools::generate::generate_with_progress(&opts, &mut out, &progress)
        };
        return printed("generate", written.and_then(|_| out.flush()));
    }
    if let Command::Healthcheck { url } = &cli.command {
        // Only http.listen, for the default URL: a setting this command does not use, even a
        // broken one, must not fail it.
        let url = url.clone().unwrap_or_else(|| {
            let listen = Settings::http_listen(cli.config.as_deref());
            tools::healthcheck::default_url(listen.as_deref())
        });
        return match tools::healthcheck::get(&url, tools::healthcheck::TIMEOUT) {
            Ok(answer) if answer.status == 200 => {
                println!("{url}: {} {}", answer.status, answer.body);
                ExitCode::SUCCESS
            }
            Ok(answer) => {
                eprintln!(
                    "edc-ingest healthcheck: {url}: {} {}",
                    answer.status, answer.body
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("edc-ingest healthcheck: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The one rustls crypto provider (aws-lc-rs) of every TLS connection, installed before any.
    edc_ingest::tls::provider();
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e.into()),
    };
    if let Command::Status { .. } = cli.command {
        // Asking for a queue that is not declared closes the channel, which lapin logs as an
        // error; `status` reports the queue as absent itself.
        settings.log.level.push_str(",lapin::channel=off");
    }
    let telemetry = match telemetry::init(&settings.log, &settings.otel) {
        Ok(t) => t,
        Err(e) => return fail(&Failure::Setup(e)),
    };
    // One thread: the daemon waits on the broker and the database, and its own work per record is a
    // few microseconds; a single thread saves the wake-ups between worker threads (measured with
    // `perf`: they were most of the daemon's CPU time). lapin runs its I/O on a thread of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let result = runtime.block_on(super::run(cli.command, settings));
    // lapin's I/O is closed by the command itself before this point; the runtime then shuts down.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    // The spans still held go out now, outside the runtime (the exporter blocks).
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// The end of a command that only prints: a reader that went away (`| head`) is no failure.
fn printed(command: &str, written: std::io::Result<()>) -> ExitCode {
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(&Failure::Runtime(anyhow::anyhow!("{command}: {e}"))),
    }
}

fn fail(failure: &Failure) -> ExitCode {
    match failure {
        Failure::Setup(m) => eprintln!("edc-ingest: {m}"),
        Failure::Runtime(e) => eprintln!("edc-ingest: {e:#}"),
    }
    ExitCode::from(failure.exit_code())
}
