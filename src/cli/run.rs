//! Runs one command, once its settings are loaded (all but `generate`, `healthcheck` and
//! `completions`, which `start` runs before reading any setting). Only `run` and `check-config` read
//! the pseudonymisation key.

use std::io::{BufRead, BufReader, Write};

use edc_ingest::config::Settings;
use edc_ingest::failure::{Failure, runtime};
use edc_ingest::pipeline::Pseudonymizer;
use edc_ingest::protocol::Registry;
use edc_ingest::tools::progress::Progress;
use edc_ingest::{daemon, shutdown, store, tools};
use tokio_util::sync::CancellationToken;

use super::{BatchCommand, Command, Output, dlq, odm, study};

/// Runs one command (all but `generate`, `healthcheck` and `completions`, which need no settings).
pub async fn run(command: Command, settings: Settings) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let out = &mut stdout.lock();
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
        Command::CheckConfig { cel_names } => {
            let registry = Registry::open(&settings.studies_dir)?;
            let key = Pseudonymizer::from_settings(&settings)?;
            println!("configuration OK: {}", settings.describe());
            println!("pseudonymisation key: id {}", key.key_id());
            println!("protocols: {}", registry.describe());
            for w in &registry.warnings {
                println!("warning: {w}");
            }
            match cel_names {
                Some(form) => print_cel_names(&registry, &form),
                None => Ok(()),
            }
        }
        Command::Publish { file, urgent } => {
            let mut amqp = settings.amqp.clone();
            if urgent {
                amqp.queue = amqp.urgent_queue.clone();
            }
            let progress = Progress::counter("published");
            let retry = &settings.retry;
            let input: Box<dyn BufRead> = if file == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                let f = std::fs::File::open(&file)
                    .map_err(|e| Failure::setup(format!("{file}: {e}")))?;
                Box::new(BufReader::new(f))
            };
            let sent = tools::publish::publish_with_progress(&amqp, retry, input, &progress)
                .await
                .map_err(runtime)?;
            drop(progress);
            println!(
                "published {sent} messages to {} (all confirmed)",
                amqp.queue
            );
            Ok(())
        }
        Command::Prune {
            older_than,
            parked_older_than,
        } => {
            let opts = tools::prune::Options {
                older_than,
                parked_older_than,
            };
            println!("{}", tools::prune::prune(&settings, opts).await?);
            Ok(())
        }
        Command::Batch {
            command: BatchCommand::Status { id, output },
        } => {
            let receipt = tools::batch::status(&settings.postgres, &id, output.into())
                .await
                .map_err(runtime)?;
            println!("{receipt}");
            Ok(())
        }
        Command::Status {
            metrics,
            window,
            output,
        } => {
            let opts = tools::status::Options { metrics, window };
            let report = tools::status::status(&settings, &opts).await;
            let shown = match output {
                Output::Json => serde_json::to_string(&report).map_err(runtime)?,
                Output::Text => report.text(),
            };
            writeln!(out, "{}", shown.trim_end()).map_err(runtime)?;
            out.flush().map_err(runtime)?;
            if !report.complete() {
                return Err(runtime(anyhow::anyhow!(
                    "status: {} could not be read (see above)",
                    report.missing().join(" and ")
                )));
            }
            Ok(())
        }
        Command::Dlq { command } => dlq::run(command, &settings, out).await,
        Command::Study { command } => study::run(command, &settings),
        Command::Odm { command } => odm::run(command, &settings).await,
        Command::Generate { .. } | Command::Healthcheck { .. } | Command::Completions { .. } => {
            unreachable!("handled before the settings are read")
        }
    }
}

/// `check-config --cel-names FORM`: `STUDY vVERSION FORM [GROUP] ITEM -> CEL name`, one line per
/// item of every study version that has the form.
fn print_cel_names(registry: &Registry, form: &str) -> Result<(), Failure> {
    let mut versions: Vec<_> = registry
        .studies()
        .filter_map(|p| p.forms.get(form).map(|f| (p, f)))
        .collect();
    if versions.is_empty() {
        return Err(Failure::setup(format!(
            "no study protocol has a form {}",
            edc_ingest::printable::printable(form)
        )));
    }
    versions
        .sort_by(|(a, _), (b, _)| (&a.study, a.effective_from).cmp(&(&b.study, b.effective_from)));
    println!("CEL names:");
    for (p, f) in versions {
        for (group, item, cel) in f.cel_mapping() {
            let group = group.map(|g| format!(" group {g}")).unwrap_or_default();
            println!(
                "  {} v{} form {form}{group} item {item} -> {cel}",
                p.study, p.version
            );
        }
    }
    Ok(())
}
