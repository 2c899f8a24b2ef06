//! The `dlq` commands: which dead letters (`--kind` takes only the real kinds, `--batch`, `--limit`),
//! and how each command is run. None of them needs the pseudonymisation key; all of them need the
//! database, which says which dead letters are edc-ingest's own.

use std::io::Write;

use clap::Subcommand;
use clap::builder::PossibleValuesParser;
use edc_ingest::config::Settings;
use edc_ingest::failure::{Failure, runtime};
use edc_ingest::tools;

use super::Output;

#[derive(clap::Args, Clone)]
pub struct DlqSelect {
    /// Only dead letters of this kind: edc-ingest's own (those it recorded in rejections; never
    /// read from a header), broker:<reason> for those the broker dead-lettered itself, unknown for
    /// any other.
    #[arg(long, value_parser = PossibleValuesParser::new(tools::dlq::KINDS))]
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
    #[command(after_help = "Examples:
  $ edc-ingest dlq list
  $ edc-ingest dlq list --kind broker:delivery_limit --output json")]
    List {
        #[command(flatten)]
        select: DlqSelect,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// A few dead letters: who made each and why, where it came from, when it expires, and a
    /// de-identified preview of the body, each printed as it is taken (JSON: one object per line).
    #[command(after_help = "Examples:
  $ edc-ingest dlq show --kind invalid --count 3
  $ edc-ingest dlq show --batch b1f2c3d4-0000-4000-8000-000000000001 --output json")]
    Show {
        #[command(flatten)]
        select: DlqSelect,
        /// How many to show.
        #[arg(long, default_value_t = 5)]
        count: usize,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Re-validate against the current protocols and republish to the work queue it came from
    /// (or amqp.queue, if it names no work queue), printing each dead letter's verdict as it is
    /// handled.
    #[command(after_help = "Examples:
  $ edc-ingest dlq replay --kind invalid --dry-run
  $ edc-ingest dlq replay --kind invalid --actor dm-jane")]
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
    #[command(after_help = "Example:
  $ edc-ingest dlq purge --kind malformed --actor dm-jane")]
    Purge {
        #[command(flatten)]
        select: DlqSelect,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
        /// Who is purging (default: the login name); recorded in dlq_actions.
        #[arg(long)]
        actor: Option<String>,
    },
}

/// Runs one `dlq` command, printing to `out`.
pub async fn run(
    command: DlqCommand,
    settings: &Settings,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    match command {
        DlqCommand::List { select, output } => {
            tools::dlq::list(settings, &select.filter(), output.into(), out).await
        }
        DlqCommand::Show {
            select,
            count,
            output,
        } => tools::dlq::show(settings, &select.filter(), count, output.into(), out).await,
        DlqCommand::Replay {
            select,
            dry_run,
            actor,
        } => {
            let actor = tools::dlq::actor(actor);
            tools::dlq::replay(settings, &select.filter(), dry_run, &actor, out).await
        }
        DlqCommand::Purge { select, yes, actor } => {
            if select.kind.is_none() {
                return Err(Failure::setup(
                    "dlq purge needs --kind: purging every kind at once is refused",
                ));
            }
            let actor = tools::dlq::actor(actor);
            tools::dlq::purge(settings, &select.filter(), yes, &actor, out).await
        }
    }
    .map_err(runtime)
}
