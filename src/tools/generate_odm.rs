//! `edc-ingest generate --odm`: a synthetic CDISC ODM 1.3.2 ClinicalData file for DEMO-001, the
//! input of `odm import` at any size (its benchmark imports 150 MB), reproducible from a seed.
//!
//! Subjects one after another (keys `DEMO-001-SS-NNNNNN`, a SiteRef each), each with the study
//! events SCREENING, BASELINE, WEEK4 and WEEK12: a VS form at every event, an LB form at BASELINE
//! and WEEK12, and zero to two AE forms (FormRepeatKey 1, 2) at WEEK4, until `count` forms are
//! written. Every form has its AuditRecord (user, site, date-time), its items in one
//! ItemGroupData, and some carry a vendor attribute (skipped and counted by the import). A share
//! of the forms has a value that is not of its item's type (refused by `odm import`), a share a
//! systolic pressure out of range (stored as `queried`). About 600 bytes a form.

use std::io::Write;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::generate::Options;
use super::progress::Progress;
use crate::odm::xml::ODM13_NS;

const VISITS: [&str; 4] = ["SCREENING", "BASELINE", "WEEK4", "WEEK12"];
const AE_TERMS: [&str; 6] = [
    "Headache",
    "Nausea",
    "Fatigue",
    "Dizziness",
    "Rash",
    "Insomnia",
];
const SEVERITIES: [&str; 3] = ["MILD", "MODERATE", "SEVERE"];

/// What one form is to be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Valid,
    Queried,
    Invalid,
}

struct Writer<'a> {
    out: &'a mut dyn Write,
    rng: StdRng,
    opts: &'a Options,
    written: usize,
    progress: &'a Progress,
}

impl Writer<'_> {
    fn fate(&mut self) -> Fate {
        let roll: f64 = self.rng.random();
        if roll < self.opts.invalid_ratio {
            Fate::Invalid
        } else if roll < self.opts.invalid_ratio + self.opts.queried_ratio {
            Fate::Queried
        } else {
            Fate::Valid
        }
    }

    /// One FormData (with its AuditRecord and one item group), unless `count` is reached.
    fn form(
        &mut self,
        form: &str,
        repeat: Option<u32>,
        day: u32,
        items: &[(&str, String)],
    ) -> std::io::Result<()> {
        if self.written >= self.opts.count {
            return Ok(());
        }
        let repeat = repeat.map_or(String::new(), |r| format!(" FormRepeatKey=\"{r}\""));
        let vendor = if self.rng.random_range(0..4) == 0 {
            " redcap:Complete=\"2\""
        } else {
            ""
        };
        let user = self.rng.random_range(1..=20);
        let minute = self.rng.random_range(0..60);
        let mut s = format!(
            "      <FormData FormOID=\"{form}\"{repeat}{vendor}>\n        <AuditRecord><UserRef UserOID=\"crc-{user}\"/><LocationRef LocationOID=\"SITE-01\"/><DateTimeStamp>2026-11-{day:02}T10:{minute:02}:00Z</DateTimeStamp></AuditRecord>\n        <ItemGroupData ItemGroupOID=\"IG.{form}\">\n"
        );
        for (item, value) in items {
            s.push_str(&format!(
                "          <ItemData ItemOID=\"{item}\" Value=\"{value}\"/>\n"
            ));
        }
        s.push_str("        </ItemGroupData>\n      </FormData>\n");
        self.out.write_all(s.as_bytes())?;
        self.written += 1;
        self.progress.inc(1);
        Ok(())
    }

    fn vs(&mut self, day: u32) -> std::io::Result<()> {
        let fate = self.fate();
        let sys = match fate {
            Fate::Queried => "300".to_string(),
            Fate::Invalid => "high".to_string(),
            Fate::Valid => self.rng.random_range(100..=160).to_string(),
        };
        let items = [
            ("SYSBP", sys),
            ("DIABP", self.rng.random_range(60..=95).to_string()),
            ("PULSE", self.rng.random_range(50..=100).to_string()),
            ("TEMP", format!("36.{}", self.rng.random_range(0..10))),
            ("VSDAT", format!("2026-11-{day:02}")),
        ];
        self.form("VS", None, day, &items)
    }

    fn lb(&mut self, day: u32) -> std::io::Result<()> {
        let fate = self.fate();
        let hgb = match fate {
            Fate::Invalid => "13,5".to_string(),
            _ => format!(
                "{}.{}",
                self.rng.random_range(11..=16),
                self.rng.random_range(0..10)
            ),
        };
        let items = [
            ("HGB", hgb),
            ("WBC", format!("{}.2", self.rng.random_range(4..=10))),
            ("PLT", self.rng.random_range(150..=400).to_string()),
            ("CREAT", "0.9".to_string()),
            ("LBDAT", format!("2026-11-{day:02}")),
            (
                "LBCOM",
                "sample &lt;haemolysed&gt;&#10;repeat drawn".to_string(),
            ),
        ];
        self.form("LB", None, day, &items)
    }

    fn ae(&mut self, repeat: u32, day: u32) -> std::io::Result<()> {
        let fate = self.fate();
        let start = match fate {
            Fate::Invalid => "2026-13-40".to_string(),
            _ => format!("2026-11-{day:02}"),
        };
        let items = [
            (
                "AETERM",
                AE_TERMS[self.rng.random_range(0..AE_TERMS.len())].to_string(),
            ),
            (
                "AESER",
                if self.rng.random_range(0..20) == 0 {
                    "Y"
                } else {
                    "N"
                }
                .to_string(),
            ),
            (
                "AESEV",
                SEVERITIES[self.rng.random_range(0..SEVERITIES.len())].to_string(),
            ),
            ("AESTDAT", start),
        ];
        self.form("AE", Some(repeat), day, &items)
    }
}

/// Writes the file (see the module's text).
pub fn generate_with_progress(
    opts: &Options,
    out: &mut dyn Write,
    progress: &Progress,
) -> std::io::Result<()> {
    writeln!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- Synthetic DEMO-001 data (edc-ingest generate --odm --seed {}): no real person. -->\n<ODM xmlns=\"{ODM13_NS}\" xmlns:redcap=\"https://projectredcap.org\" ODMVersion=\"1.3.2\" FileType=\"Snapshot\" FileOID=\"DEMO-001.{}\" CreationDateTime=\"2026-11-30T12:00:00Z\">\n  <ClinicalData StudyOID=\"DEMO-001\" MetaDataVersionOID=\"2.1\">",
        opts.seed, opts.seed
    )?;
    let mut w = Writer {
        out,
        rng: StdRng::seed_from_u64(opts.seed),
        opts,
        written: 0,
        progress,
    };
    let mut subject = 0u32;
    while w.written < opts.count {
        subject += 1;
        let site = subject % 3 + 1;
        writeln!(
            w.out,
            "  <SubjectData SubjectKey=\"DEMO-001-{site:02}-{subject:06}\">\n    <SiteRef LocationOID=\"SITE-{site:02}\"/>"
        )?;
        for (i, visit) in VISITS.iter().enumerate() {
            if w.written >= opts.count {
                break;
            }
            let day = 1 + 7 * i as u32;
            writeln!(w.out, "    <StudyEventData StudyEventOID=\"{visit}\">")?;
            w.vs(day)?;
            match *visit {
                "BASELINE" | "WEEK12" => w.lb(day)?,
                "WEEK4" => {
                    for repeat in 1..=w.rng.random_range(0..=2) {
                        w.ae(repeat, day)?;
                    }
                }
                _ => {}
            }
            writeln!(w.out, "    </StudyEventData>")?;
        }
        writeln!(w.out, "  </SubjectData>")?;
    }
    writeln!(w.out, "  </ClinicalData>\n</ODM>")?;
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odm::clinical::ClinicalReader;
    use crate::odm::xml::Limits;

    fn generated(count: usize, invalid_ratio: f64) -> Vec<u8> {
        let opts = Options {
            count,
            seed: 3,
            invalid_ratio,
            queried_ratio: 0.1,
            duplicate_ratio: 0.0,
            batch_size: 1,
        };
        let mut out = Vec::new();
        generate_with_progress(&opts, &mut out, &Progress::hidden()).unwrap();
        out
    }

    #[test]
    fn the_file_holds_count_forms_each_read_whole_and_is_reproducible() {
        let file = generated(500, 0.0);
        assert_eq!(file, generated(500, 0.0));
        let forms: Vec<_> = ClinicalReader::new(&file[..], Limits::default())
            .map(|f| f.expect("every form reads"))
            .collect();
        assert_eq!(forms.len(), 500);
        assert!(
            forms
                .iter()
                .all(|f| f.study_oid == "DEMO-001" && f.site_oid.is_some())
        );
        assert!(forms.iter().any(|f| f.form_repeat.as_deref() == Some("2")));
        let per_form = file.len() / 500;
        assert!((400..900).contains(&per_form), "{per_form} bytes a form");
    }

    #[test]
    fn the_forms_map_onto_demo_001_and_the_invalid_share_is_refused() {
        let registry = crate::protocol::Registry::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/studies"),
        )
        .unwrap();
        let key = crate::pipeline::Pseudonymizer::insecure_dev();
        let map = |file: &[u8]| {
            ClinicalReader::new(file, Limits::default())
                .map(|f| crate::pipeline::odm::map(&f.unwrap(), &registry, &key))
                .collect::<Vec<_>>()
        };
        let clean = map(&generated(300, 0.0));
        assert!(clean.iter().all(Result::is_ok));
        let some_bad = map(&generated(300, 0.2));
        let refused = some_bad.iter().filter(|m| m.is_err()).count();
        assert!((20..120).contains(&refused), "{refused} of 300 refused");
        assert!(
            some_bad
                .iter()
                .filter_map(|m| m.as_ref().err())
                .all(|r| r.code == "bad_value")
        );
    }
}
