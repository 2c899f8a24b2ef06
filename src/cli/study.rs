//! `study from-odm`: the command line of the converter (`tools::study_odm`), what it prints where.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use clap::builder::NonEmptyStringValueParser;
use edc_ingest::config::Settings;
use edc_ingest::failure::{Failure, runtime};
use edc_ingest::odm::xml::Limits;
use edc_ingest::printable::printable;
use edc_ingest::tools::study_odm::{self, Options, Refused};

#[derive(Subcommand)]
pub enum StudyCommand {
    /// Print the study protocol (YAML) converted from one MetaDataVersion of a CDISC ODM file.
    /// What a person must review goes to stderr, one line each: `phi:` an item guessed to be a
    /// direct identifier (made phi: true), `not converted:` what the protocol cannot say,
    /// `note:` how something was read, the summary last. Exit 2 when the file is refused.
    #[command(after_help = "Examples:
  $ edc-ingest study from-odm cdisc-export.xml > studies/cdisc.yaml
  $ edc-ingest study from-odm redcap.xml --site SITE-01 --visit BASELINE --output studies/demo.yaml
  $ edc-ingest study from-odm openclinica.xml --metadata-version v1.0.0")]
    FromOdm {
        /// The ODM 1.3 file (its ClinicalData, if any, is read past).
        file: PathBuf,
        /// The MetaDataVersion to convert; required when the file has several.
        #[arg(long, value_name = "OID")]
        metadata_version: Option<String>,
        /// A site the file does not name (repeat for several); the first becomes
        /// odm.default_site, the site of forms whose document names none.
        #[arg(long = "site", value_name = "SITE", value_parser = NonEmptyStringValueParser::new())]
        sites: Vec<String>,
        /// The visit of forms whose document names no study event (odm.default_visit).
        #[arg(long, value_name = "VISIT", value_parser = NonEmptyStringValueParser::new())]
        visit: Option<String>,
        /// Write the protocol to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

pub fn run(command: StudyCommand, settings: &Settings) -> Result<(), Failure> {
    let StudyCommand::FromOdm {
        file,
        metadata_version,
        sites,
        visit,
        output,
    } = command;
    let name = printable(&file.to_string_lossy());
    if let Some(out) = &output
        && let (Ok(a), Ok(b)) = (std::fs::canonicalize(out), std::fs::canonicalize(&file))
        && a == b
    {
        return Err(Failure::setup(format!(
            "{name}: --output names the ODM file itself: not overwritten"
        )));
    }
    let input = std::fs::File::open(&file).map_err(|e| Failure::setup(format!("{name}: {e}")))?;
    let opts = Options {
        metadata_version,
        sites,
        visit,
    };
    let limits = Limits::from(&settings.odm);
    let converted = study_odm::from_odm(std::io::BufReader::new(input), limits, &opts).map_err(
        |e| match e {
            Refused::Invalid(_) => runtime(anyhow::anyhow!("{name}: {e}")),
            _ => Failure::setup(format!("{name}: {e}")),
        },
    )?;
    let mut err = std::io::stderr().lock();
    for line in &converted.lines {
        writeln!(err, "{line}").map_err(runtime)?;
    }
    match output {
        Some(path) => {
            // Whole or not at all: a daemon reloading its protocols never reads half a file.
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            let shown = printable(&path.to_string_lossy());
            std::fs::write(&tmp, &converted.yaml)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| runtime(anyhow::anyhow!("{shown}: {e}")))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(converted.yaml.as_bytes())
                .and_then(|_| out.flush())
                .map_err(runtime)?;
        }
    }
    Ok(())
}
