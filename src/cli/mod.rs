//! The command line: every command, its arguments and an example of each (the `dlq` commands in
//! [`dlq`]); [`run`] runs one. `--config` is also read from `EDC_CONFIG`.

mod dlq;
#[cfg(test)]
mod docs;
mod odm;
mod run;
mod start;
mod study;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use edc_ingest::tools;

pub use dlq::DlqCommand;
pub use odm::OdmCommand;
pub use run::run;
pub use start::start;
pub use study::StudyCommand;

#[derive(Parser)]
#[command(
    name = "edc-ingest",
    version,
    about = "Clinical-trial CRF ingestion: RabbitMQ -> PostgreSQL, exactly once, de-identified",
    after_help = "Examples:
  $ edc-ingest --config /etc/edc-ingest/config.yaml run
  $ edc-ingest status
  $ edc-ingest dlq list

Settings: the defaults, then --config PATH (or EDC_CONFIG), then EDC__SECTION__KEY variables.
Only `run` and `check-config` need the pseudonymisation key.
Exit codes: 0 success, 1 runtime failure, 2 configuration error or refused command line."
)]
pub struct Cli {
    /// YAML file layered over the defaults (then EDC__SECTION__KEY variables over it).
    #[arg(long, global = true, value_name = "PATH", env = "EDC_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// How a command prints its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For a person.
    #[default]
    Text,
    /// For a program (the fields are listed in the README).
    Json,
}

impl From<Output> for tools::Format {
    fn from(o: Output) -> tools::Format {
        match o {
            Output::Text => tools::Format::Text,
            Output::Json => tools::Format::Json,
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    #[command(after_help = "Example:
  $ edc-ingest --config /etc/edc-ingest/config.yaml run")]
    Run,
    /// Apply database migrations and exit.
    #[command(after_help = "Example:
  $ edc-ingest --config /etc/edc-ingest/config.yaml migrate")]
    Migrate,
    /// Validate the configuration, the key and every study protocol, then exit.
    #[command(after_help = "Examples:
  $ edc-ingest --config /etc/edc-ingest/config.yaml check-config
  $ edc-ingest check-config --cel-names F.AE")]
    CheckConfig {
        /// Also print, for every study version with this form, the name each of its items (and
        /// its groups' items) has in CEL expressions.
        #[arg(long, value_name = "FORM")]
        cel_names: Option<String>,
    },
    /// Print synthetic DEMO-001 records as NDJSON (needs no settings).
    #[command(after_help = "Examples:
  $ edc-ingest generate --count 1000 --seed 7 > records.ndjson
  $ edc-ingest generate --count 1000 --invalid-ratio 0.1 | edc-ingest publish -
  $ edc-ingest generate --odm --count 250000 > demo-001.odm.xml")]
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
        /// Print a CDISC ODM 1.3.2 ClinicalData file of --count DEMO-001 form instances instead
        /// (about 600 bytes each; for `odm import`).
        #[arg(long)]
        odm: bool,
    },
    /// Publish NDJSON lines (one record each) to the work queue, with publisher confirms.
    #[command(after_help = "Examples:
  $ edc-ingest publish records.ndjson
  $ edc-ingest publish --urgent sae.ndjson
  $ edc-ingest generate --count 1000 | edc-ingest publish -")]
    Publish {
        /// File to read, or - for standard input.
        #[arg(default_value = "-")]
        file: String,
        /// Publish to the fast lane (amqp.urgent_queue) instead.
        #[arg(long)]
        urgent: bool,
    },
    /// Remove what is older than the horizon from the working tables that only grow (counted
    /// re-uploads, per-connection counters of completed batches, crash counts left behind), and
    /// the events the broker refused for good (outbox_parked) older than theirs. The evidence
    /// (records, audit trail, data queries, alerts, rejections) is never touched. Each horizon is
    /// at least one day.
    #[command(after_help = "Examples:
  $ edc-ingest prune --older-than 30days
  $ edc-ingest prune --older-than 30days --parked-older-than 180days")]
    Prune {
        /// The working tables' horizon, like 30days or 36h (default: retention.working_tables).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// The parked events' horizon (default: retention.outbox_parked; none: kept).
        #[arg(long, value_parser = humantime::parse_duration)]
        parked_older_than: Option<Duration>,
    },
    /// Upload batch receipts.
    #[command(after_help = "Example:
  $ edc-ingest batch status b1f2c3d4-0000-4000-8000-000000000001")]
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// Inspect, replay and purge dead letters. Nothing printed ever shows an identifier.
    #[command(after_help = "Examples:
  $ edc-ingest dlq list
  $ edc-ingest dlq show --kind invalid --count 3
  $ edc-ingest dlq replay --kind invalid --dry-run")]
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Study protocols from other sources: `from-odm` converts a CDISC ODM file's metadata.
    #[command(after_help = "Example:
  $ edc-ingest study from-odm export.xml --output studies/demo.yaml")]
    Study {
        #[command(subcommand)]
        command: StudyCommand,
    },
    /// CDISC ODM data in: `import` publishes each form instance of an ODM ClinicalData file.
    #[command(after_help = "Example:
  $ edc-ingest odm import export.xml --dry-run")]
    Odm {
        #[command(subcommand)]
        command: OdmCommand,
    },
    /// Is it keeping up? Queue depths and their trend, dead letters by kind, open batches, and the
    /// rates of the running replicas, on one screen. Exit 0 when the broker and the database
    /// answered (an unreachable replica is shown as such), 1 when either did not.
    #[command(after_help = "Examples:
  $ edc-ingest status
  $ edc-ingest status --window 1m --metrics 10.0.0.5:9090 --metrics 10.0.0.6:9090
  $ edc-ingest status --window 0s --output json")]
    Status {
        /// A replica's /metrics (http://HOST:PORT[/PATH], or HOST:PORT for /metrics); repeat for
        /// each replica [default: the local one, on the port of http.listen].
        #[arg(long, value_name = "URL")]
        metrics: Vec<String>,
        /// Time between the two readings the rates and trends are measured over; 0s: one reading,
        /// no rates.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        window: Duration,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Ask a running daemon whether it is alive: exit 0 on a 200, 1 otherwise (a container's
    /// HEALTHCHECK). Needs no key, broker or database.
    #[command(after_help = "Examples:
  $ edc-ingest healthcheck
  $ edc-ingest healthcheck --url http://127.0.0.1:9090/readyz")]
    Healthcheck {
        /// What to GET, within 5 s [default: /livez on the port of http.listen, at 127.0.0.1 unless
        /// it listens on one address: http://127.0.0.1:9090/livez with the defaults].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Print a shell completion script (needs no settings).
    #[command(after_help = "Examples:
  $ edc-ingest completions bash > /etc/bash_completion.d/edc-ingest
  $ edc-ingest completions zsh > ~/.zfunc/_edc-ingest
  $ edc-ingest completions fish > ~/.config/fish/completions/edc-ingest.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
pub enum BatchCommand {
    /// What became of a batch's records: accepted, queried, duplicates, dead-lettered by kind.
    #[command(after_help = "Examples:
  $ edc-ingest batch status b1f2c3d4-0000-4000-8000-000000000001
  $ edc-ingest batch status b1f2c3d4-0000-4000-8000-000000000001 --output json")]
    Status {
        id: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// The completion script of `shell` (made in memory: the generator panics on a failed write).
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "edc-ingest", &mut script);
    script
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every command and subcommand, as the words that name it (`["dlq", "show"]`).
    fn commands(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
        let help = cmd
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        out.push((path.clone(), help));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            commands(sub, p, out);
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example_that_parses() {
        let mut all = Vec::new();
        commands(&Cli::command(), Vec::new(), &mut all);
        assert!(all.len() >= 17, "{all:?}");
        for (path, help) in all {
            let examples: Vec<&str> = help
                .lines()
                .filter_map(|l| l.trim().strip_prefix("$ "))
                .collect();
            assert!(
                help.starts_with("Example") && !examples.is_empty(),
                "`edc-ingest {}` has no example",
                path.join(" ")
            );
            // The example of a command runs that command.
            assert!(
                examples.iter().any(|e| e.contains(&path.join(" "))),
                "no example of `edc-ingest {}` runs it: {examples:?}",
                path.join(" ")
            );
            for example in examples {
                for part in example.split(" | ") {
                    let words: Vec<&str> = part
                        .split(" > ")
                        .next()
                        .unwrap()
                        .split_whitespace()
                        .skip_while(|w| w.contains('='))
                        .collect();
                    if let Err(e) = Cli::try_parse_from(&words) {
                        panic!("example `{part}` does not parse: {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn kind_accepts_only_the_real_kinds_and_names_them_when_refused() {
        for kind in tools::dlq::KINDS {
            assert!(
                Cli::try_parse_from(["edc-ingest", "dlq", "list", "--kind", kind]).is_ok(),
                "{kind}"
            );
        }
        let e = match Cli::try_parse_from(["edc-ingest", "dlq", "show", "--kind", "invalidd"]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("--kind invalidd was accepted"),
        };
        for kind in tools::dlq::KINDS {
            assert!(e.contains(kind), "{kind} not named in: {e}");
        }
    }
}
