//! `odm import`: the command line of the importer (`tools::odm_import`), what it prints where,
//! and its exit code.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use clap::builder::NonEmptyStringValueParser;
use edc_ingest::config::Settings;
use edc_ingest::failure::{Failure, runtime};
use edc_ingest::odm::xml::Limits;
use edc_ingest::pipeline::Pseudonymizer;
use edc_ingest::printable::printable;
use edc_ingest::protocol::{Registry, SubjectKey};
use edc_ingest::tools::odm_import::{self, Context, Defaults, Options};

use super::Output;

#[derive(Subcommand)]
pub enum OdmCommand {
    /// Publish each form instance (FormData) of an ODM 1.3 ClinicalData file as one message (an
    /// ODM document of its own), with publisher confirms, under one upload batch. The file is read
    /// twice, streaming: first checked whole (refused at the XML level: nothing is published),
    /// then published. Prints a report: forms by study and form, transactions, refusals with
    /// line and column, what was skipped. Exit 0 when every form was published, 1 when some were
    /// refused (the others were published), 2 when the file itself was refused.
    #[command(after_help = "Examples:
  $ edc-ingest odm import export.xml
  $ edc-ingest odm import redcap.xml --site SITE-01 --visit BASELINE --dry-run
  $ edc-ingest odm import export.xml --output json > report.json")]
    Import {
        /// The ODM 1.3 file (a regular file: it is read twice).
        file: PathBuf,
        /// Parse, map and validate against the study protocols; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// The site of subjects the file gives no SiteRef.
        #[arg(long, value_name = "SITE", value_parser = NonEmptyStringValueParser::new())]
        site: Option<String>,
        /// The visit of forms the file gives no StudyEventData.
        #[arg(long, value_name = "VISIT", value_parser = NonEmptyStringValueParser::new())]
        visit: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

pub async fn run(command: OdmCommand, settings: &Settings) -> Result<(), Failure> {
    let OdmCommand::Import {
        file,
        dry_run,
        site,
        visit,
        output,
    } = command;
    let name = printable(&file.to_string_lossy());
    let registry = Registry::open(&settings.studies_dir)?;
    let (pseudonymizer, note) = pseudonymizer(settings, &registry, dry_run)?;
    let options = Options {
        dry_run,
        defaults: Defaults { site, visit },
        limits: Limits::from(&settings.odm),
    };
    let ctx = Context {
        registry: &registry,
        pseudonymizer: &pseudonymizer,
        options: &options,
    };
    let imported = odm_import::import(&file, &ctx, &settings.amqp, &settings.retry)
        .await
        .map_err(|e| Failure::setup(format!("{name}: {e}")))?;
    let mut report = imported.report;
    report.notes.extend(note);
    let shown = match output {
        Output::Json => report.json(),
        Output::Text => report.text(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", shown.trim_end())
        .and_then(|_| out.flush())
        .map_err(runtime)?;
    if let Some(e) = imported.failed {
        return Err(runtime(anyhow::anyhow!(
            "{name}: publishing failed after {} of {} forms were confirmed: {e:#}",
            report.published,
            report.publishable
        )));
    }
    match report.exit_code() {
        0 => Ok(()),
        2 => Err(Failure::setup(format!(
            "{name}: the file is refused, nothing was published: {}",
            report
                .file_refused
                .as_ref()
                .map_or("", |r| r.reason.as_str())
        ))),
        _ => Err(runtime(anyhow::anyhow!(
            "{name}: {} of {} forms refused (listed in the report){}",
            report.tally.refused_total(),
            report.forms_read,
            if dry_run {
                ""
            } else {
                "; the others were published"
            }
        ))),
    }
}

/// The key the record ids of pseudonymised subjects need: the configured one; none is needed when
/// no study pseudonymises its subject keys; a dry run goes on without it (those record ids then
/// differ from the daemon's, which the report notes).
fn pseudonymizer(
    settings: &Settings,
    registry: &Registry,
    dry_run: bool,
) -> Result<(Pseudonymizer, Option<String>), Failure> {
    let configured = settings.pseudonym_key.is_some()
        || settings.pseudonym_key_file.is_some()
        || settings.dev_insecure_pseudonym_key;
    if configured {
        return Ok((Pseudonymizer::from_settings(settings)?, None));
    }
    let mut studies: Vec<&str> = registry
        .studies()
        .filter(|p| p.odm.subject_key == SubjectKey::Pseudonymise)
        .map(|p| p.study.as_str())
        .collect();
    studies.dedup();
    if studies.is_empty() {
        // Used for no subject: no study asks for pseudonyms.
        return Ok((Pseudonymizer::insecure_dev(), None));
    }
    let studies = studies.join(", ");
    if dry_run {
        return Ok((
            Pseudonymizer::insecure_dev(),
            Some(format!(
                "no pseudonymisation key: the subjects of {studies} (odm.subject_key: pseudonymise) \
                 were keyed with a stand-in, so their record ids are not those the daemon stores"
            )),
        ));
    }
    Err(Failure::setup(format!(
        "{studies} pseudonymise their subject keys (odm.subject_key: pseudonymise): odm import \
         needs the pseudonymisation key (pseudonym_key_file) to name their records"
    )))
}
