//! The `edc-ingest` binary: parses the command line, loads the configuration and runs one command.
//! Exit codes: 0 success, 1 runtime failure, 2 configuration error.

use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edc_ingest::app::{self, SetupError};
use edc_ingest::config::{ConfigError, Settings};
use edc_ingest::{db, shutdown, telemetry, tools};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "edc-ingest",
    version,
    about = "Clinical-trial CRF ingestion: RabbitMQ -> PostgreSQL, exactly once, de-identified"
)]
struct Cli {
    /// YAML file layered over the defaults (then EDC__SECTION__KEY variables over it).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Run,
    /// Apply database migrations and exit.
    Migrate,
    /// Validate the configuration, the key and every study protocol, then exit.
    CheckConfig,
    /// Print synthetic DEMO-001 records as NDJSON.
    Generate {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Share of records made invalid (dead-lettered).
        #[arg(long, default_value_t = 0.02)]
        invalid_ratio: f64,
        /// Share of records that fail a soft check (stored as queried).
        #[arg(long, default_value_t = 0.05)]
        queried_ratio: f64,
        /// Share of lines that repeat an earlier line (recognised as duplicates).
        #[arg(long, default_value_t = 0.0)]
        duplicate_ratio: f64,
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
    },
    /// Publish NDJSON lines (one record each) to the work queue, with publisher confirms.
    Publish {
        /// File to read, or - for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// Publish to the fast lane (amqp.urgent_queue) instead.
        #[arg(long)]
        urgent: bool,
    },
    /// Upload batch receipts.
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// Inspect, replay and purge dead letters. Nothing printed ever shows an identifier.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum BatchCommand {
    /// What became of a batch's records: accepted, queried, duplicates, dead-lettered by kind.
    Status { id: String },
}

#[derive(clap::Args, Clone)]
struct DlqSelect {
    /// Only dead letters of this kind (malformed, too_large, invalid, conflict, panic, failed, poison).
    #[arg(long)]
    kind: Option<String>,
    /// Only dead letters of this upload batch.
    #[arg(long)]
    batch: Option<String>,
    /// Look at no more than this many dead letters.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
}

impl DlqSelect {
    fn filter(&self) -> tools::dlq::Filter {
        tools::dlq::Filter {
            kind: self.kind.clone(),
            batch: self.batch.clone(),
            limit: self.limit,
        }
    }
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Counts by kind and reason, and by study, site and batch.
    List {
        #[command(flatten)]
        select: DlqSelect,
    },
    /// A few dead letters: headers and a de-identified preview of the body.
    Show {
        #[command(flatten)]
        select: DlqSelect,
        /// How many to show.
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
    /// Re-validate against the current protocols and republish to the work queue.
    Replay {
        #[command(flatten)]
        select: DlqSelect,
        /// Only say what each would become.
        #[arg(long)]
        dry_run: bool,
        /// Who is replaying (default: the login name); recorded in dlq_actions.
        #[arg(long)]
        actor: Option<String>,
    },
    /// Remove dead letters of one kind for good (asks for confirmation).
    Purge {
        #[command(flatten)]
        select: DlqSelect,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        actor: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Generate {
        count,
        seed,
        invalid_ratio,
        queried_ratio,
        duplicate_ratio,
        batch_size,
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
        let mut out = std::io::BufWriter::new(stdout.lock());
        return match tools::generate::generate(&opts, &mut out).and_then(|_| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => fail(1, &format!("generate: {e}")),
        };
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e @ (ConfigError::Load(_) | ConfigError::Invalid(_))) => {
            return fail(2, &e.to_string());
        }
    };
    telemetry::init(&settings.log);
    // One thread: the daemon waits on the broker and the database, and its own work per record is a
    // few microseconds; a single thread saves the wake-ups between worker threads (measured with
    // `perf`: they were most of the daemon's CPU time). lapin runs its I/O on a thread of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let result = runtime.block_on(command(cli.command, settings));
    // lapin's I/O is closed by the command itself before this point; the runtime then shuts down.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<SetupError>().is_some() => fail(2, &format!("{e:#}")),
        Err(e) => fail(1, &format!("{e:#}")),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("edc-ingest: {message}");
    ExitCode::from(code)
}

async fn command(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let token = CancellationToken::new();
            shutdown::listen(token.clone())?;
            let started = std::time::Instant::now();
            let summary = app::run(settings, token).await?;
            let line = format!(
                "edc-ingest stopped after {:.1}s: {summary}",
                started.elapsed().as_secs_f64()
            );
            tracing::info!("{line}");
            println!("{line}");
            Ok(())
        }
        Command::Migrate => {
            let applied = db::migrate(&settings.postgres).await?;
            println!(
                "migrations applied: {}",
                if applied.is_empty() {
                    "none (up to date)".to_string()
                } else {
                    applied.join(", ")
                }
            );
            Ok(())
        }
        Command::CheckConfig => {
            let registry = app::load_registry(&settings.studies_dir)?;
            app::load_pseudonymizer(&settings)?;
            println!("configuration OK: {}", settings.describe());
            println!("protocols: {}", app::describe(&registry));
            for w in &registry.warnings {
                println!("warning: {w}");
            }
            Ok(())
        }
        Command::Publish { file, urgent } => {
            let mut amqp = settings.amqp.clone();
            if urgent {
                amqp.queue = amqp.urgent_queue.clone();
            }
            let sent = if file == "-" {
                tools::publish::publish(&amqp, &settings.retry, std::io::stdin().lock()).await?
            } else {
                let f = std::fs::File::open(&file).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
                tools::publish::publish(&amqp, &settings.retry, BufReader::new(f)).await?
            };
            println!(
                "published {sent} messages to {} (all confirmed)",
                amqp.queue
            );
            Ok(())
        }
        Command::Batch {
            command: BatchCommand::Status { id },
        } => {
            println!("{}", tools::batch::status(&settings.postgres, &id).await?);
            Ok(())
        }
        Command::Dlq { command } => {
            let out = match command {
                DlqCommand::List { select } => {
                    tools::dlq::list(&settings, &select.filter()).await?
                }
                DlqCommand::Show { select, count } => {
                    tools::dlq::show(&settings, &select.filter(), count).await?
                }
                DlqCommand::Replay {
                    select,
                    dry_run,
                    actor,
                } => {
                    let actor = tools::dlq::actor(actor);
                    tools::dlq::replay(&settings, &select.filter(), dry_run, &actor).await?
                }
                DlqCommand::Purge { select, yes, actor } => {
                    if select.kind.is_none() {
                        return Err(app::SetupError(
                            "dlq purge needs --kind: purging every kind at once is refused".into(),
                        )
                        .into());
                    }
                    let actor = tools::dlq::actor(actor);
                    tools::dlq::purge(&settings, &select.filter(), yes, &actor).await?
                }
            };
            print!("{out}");
            Ok(())
        }
        Command::Generate { .. } => unreachable!("handled before the runtime starts"),
    }
}
