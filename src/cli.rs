//! The command line: every command, its arguments, and what it runs.

use std::io::BufReader;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use edc_ingest::config::Settings;
use edc_ingest::failure::{Failure, runtime};
use edc_ingest::pipeline::Pseudonymizer;
use edc_ingest::protocol::Registry;
use edc_ingest::{daemon, shutdown, store, tools};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "edc-ingest",
    version,
    about = "Clinical-trial CRF ingestion: RabbitMQ -> PostgreSQL, exactly once, de-identified"
)]
pub struct Cli {
    /// YAML file layered over the defaults (then EDC__SECTION__KEY variables over it).
    #[arg(long, global = true, value_name = "PATH", env = "EDC_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Remove what is older than the horizon from the working tables that only grow (counted
    /// re-uploads, per-connection counters of completed batches, crash counts left behind). The
    /// evidence (records, audit trail, data queries, alerts, rejections) is never touched.
    Prune {
        /// The horizon, like 30days or 12h (default: retention.working_tables).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
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
    /// Ask a running daemon whether it is alive: exit 0 on a 200, 1 otherwise (a container's
    /// HEALTHCHECK). Needs no key, broker or database.
    Healthcheck {
        /// What to GET, within 5 s [default: /livez on the port of http.listen, at 127.0.0.1 unless
        /// it listens on one address: http://127.0.0.1:9090/livez with the defaults].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum BatchCommand {
    /// What became of a batch's records: accepted, queried, duplicates, dead-lettered by kind.
    Status { id: String },
}

#[derive(clap::Args, Clone)]
pub struct DlqSelect {
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
pub enum DlqCommand {
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

/// Runs one command (all but `generate`, which needs no settings).
pub async fn run(command: Command, settings: Settings) -> Result<(), Failure> {
    match command {
        Command::Run => {
            let token = CancellationToken::new();
            shutdown::listen(token.clone()).map_err(runtime)?;
            let started = std::time::Instant::now();
            let summary = daemon::run(settings, token).await?;
            let line = format!(
                "edc-ingest stopped after {:.1}s: {summary}",
                started.elapsed().as_secs_f64()
            );
            tracing::info!("{line}");
            println!("{line}");
            Ok(())
        }
        Command::Migrate => {
            let applied = store::migrate(&settings.postgres)
                .await
                .map_err(|e| e.failure())?;
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
            let registry = Registry::open(&settings.studies_dir)?;
            let key = Pseudonymizer::from_settings(&settings)?;
            println!("configuration OK: {}", settings.describe());
            println!("pseudonymisation key: id {}", key.key_id());
            println!("protocols: {}", registry.describe());
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
                tools::publish::publish(&amqp, &settings.retry, std::io::stdin().lock()).await
            } else {
                let f = std::fs::File::open(&file)
                    .map_err(|e| Failure::setup(format!("{file}: {e}")))?;
                tools::publish::publish(&amqp, &settings.retry, BufReader::new(f)).await
            }
            .map_err(runtime)?;
            println!(
                "published {sent} messages to {} (all confirmed)",
                amqp.queue
            );
            Ok(())
        }
        Command::Prune { older_than } => {
            let horizon = older_than
                .or(settings.retention.working_tables)
                .ok_or_else(|| {
                    Failure::setup(
                        "prune needs --older-than (or retention.working_tables in the settings)",
                    )
                })?;
            let pg = &settings.postgres;
            let mut db = store::connect(&pg.url, pg).await.map_err(runtime)?;
            let pruned = store::retention::prune(&mut db.client, horizon)
                .await
                .map_err(runtime)?;
            db.close().await;
            println!(
                "pruned what is older than {}: {pruned}",
                humantime::format_duration(horizon)
            );
            Ok(())
        }
        Command::Batch {
            command: BatchCommand::Status { id },
        } => {
            let receipt = tools::batch::status(&settings.postgres, &id)
                .await
                .map_err(runtime)?;
            println!("{receipt}");
            Ok(())
        }
        Command::Dlq { command } => {
            let out = match command {
                DlqCommand::List { select } => tools::dlq::list(&settings, &select.filter()).await,
                DlqCommand::Show { select, count } => {
                    tools::dlq::show(&settings, &select.filter(), count).await
                }
                DlqCommand::Replay {
                    select,
                    dry_run,
                    actor,
                } => {
                    let actor = tools::dlq::actor(actor);
                    tools::dlq::replay(&settings, &select.filter(), dry_run, &actor).await
                }
                DlqCommand::Purge { select, yes, actor } => {
                    if select.kind.is_none() {
                        return Err(Failure::setup(
                            "dlq purge needs --kind: purging every kind at once is refused",
                        ));
                    }
                    let actor = tools::dlq::actor(actor);
                    tools::dlq::purge(&settings, &select.filter(), yes, &actor).await
                }
            }?;
            print!("{out}");
            Ok(())
        }
        Command::Generate { .. } | Command::Healthcheck { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}
