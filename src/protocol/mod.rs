//! Study protocols: what a site may submit for a study, and the edit checks its data must pass.
//!
//! Data managers write one YAML file per protocol version in `studies_dir`. [`Registry::load`] reads
//! them all, compiles every CEL expression once, and refuses the whole set if any file is wrong, so a
//! broken protocol can never be half in force. Validation against a protocol lives in
//! `pipeline::validate`; this module only knows the model.

use std::collections::{BTreeMap, HashMap, HashSet};

mod parse;
pub use parse::compile_expression;
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::failure::Failure;

/// Variables an expression may use besides the form's items.
pub const CONTEXT_VARIABLES: [&str; 4] = ["study", "site", "visit", "form"];

/// An alert, compiled.
pub struct Alert {
    pub id: String,
    pub source: String,
    pub program: cel::Program,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ItemType {
    Integer,
    Decimal,
    Text,
    Date,
    Code,
}

/// One item (field) of a form, as the protocol defines it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    #[serde(rename = "type")]
    pub kind: ItemType,
    #[serde(default)]
    pub required: bool,
    /// Inclusive [low, high] for integer and decimal items; outside it raises a query.
    #[serde(default)]
    pub range: Option<[f64; 2]>,
    #[serde(default)]
    pub unit: Option<String>,
    /// Allowed values of a code item; another value raises a query.
    #[serde(default)]
    pub codes: Option<Vec<String>>,
    /// Longest allowed text, in characters; longer raises a query.
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Protected health information: stored only as a keyed pseudonym.
    #[serde(default)]
    pub phi: bool,
    #[serde(default)]
    pub label: Option<String>,
}

/// An edit check, compiled.
pub struct Check {
    pub id: String,
    pub message: String,
    pub source: String,
    pub program: cel::Program,
    /// The form items the expression reads; if any is absent from a record the check is skipped.
    pub items: Vec<String>,
}

pub struct Form {
    pub items: BTreeMap<String, Item>,
    pub checks: Vec<Check>,
}

/// One version of one study's protocol, ready to validate against.
pub struct Protocol {
    pub study: String,
    pub version: String,
    pub effective_from: Option<NaiveDate>,
    pub effective_to: Option<NaiveDate>,
    pub sites: HashSet<String>,
    pub visits: HashSet<String>,
    pub forms: BTreeMap<String, Form>,
    pub alerts: Vec<Alert>,
}

/// Every protocol in force, by study; versions sorted by `effective_from`.
#[derive(Default)]
pub struct Registry {
    studies: HashMap<String, Vec<Arc<Protocol>>>,
    /// Things worth a data manager's look that do not stop the daemon (periods without a version).
    pub warnings: Vec<String>,
}

impl Registry {
    /// Loads every `*.yaml` / `*.yml` file of `dir`. Any error in any file fails the whole load, with
    /// every problem found listed (file name first).
    pub fn load(dir: &Path) -> Result<Registry, String> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("studies_dir {}: {e}", dir.display()))?;
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml") | Some("yml")
                )
            })
            .collect();
        paths.sort();
        let mut problems = Vec::new();
        let mut registry = Registry::default();
        for path in &paths {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{name}: {e}"));
                    continue;
                }
            };
            match Protocol::parse(&text) {
                Ok(p) => registry
                    .studies
                    .entry(p.study.clone())
                    .or_default()
                    .push(Arc::new(p)),
                Err(errs) => problems.extend(errs.into_iter().map(|e| format!("{name}: {e}"))),
            }
        }
        let mut warnings = Vec::new();
        for (study, versions) in &mut registry.studies {
            versions.sort_by_key(|p| p.effective_from);
            let (overlaps, gaps) = check_periods(study, versions);
            problems.extend(overlaps);
            warnings.extend(gaps);
        }
        warnings.sort();
        registry.warnings = warnings;
        if paths.is_empty() {
            problems.push(format!("no protocol files (*.yaml) in {}", dir.display()));
        }
        if problems.is_empty() {
            Ok(registry)
        } else {
            Err(problems.join("\n"))
        }
    }

    /// The version of `study` in force on `day`: the latest whose period contains it.
    pub fn protocol_for(&self, study: &str, day: NaiveDate) -> Option<&Arc<Protocol>> {
        let versions = self.studies.get(study)?;
        versions.iter().rev().find(|p| p.in_force_on(day))
    }

    pub fn knows_study(&self, study: &str) -> bool {
        self.studies.contains_key(study)
    }

    pub fn studies(&self) -> impl Iterator<Item = &Arc<Protocol>> {
        self.studies.values().flatten()
    }

    /// [`Registry::load`] for a command that cannot run without its protocols: a broken set is the
    /// operator's to fix.
    pub fn open(dir: &Path) -> Result<Registry, Failure> {
        Registry::load(dir)
            .map_err(|e| Failure::setup(format!("study protocols are invalid:\n{e}")))
    }

    /// `DEMO-001 v2.1 (3 forms), ...`, sorted.
    pub fn describe(&self) -> String {
        let mut all: Vec<String> = self
            .studies()
            .map(|p| {
                let from = p
                    .effective_from
                    .map(|d| format!(" from {d}"))
                    .unwrap_or_default();
                let to = p
                    .effective_to
                    .map(|d| format!(" to {d}"))
                    .unwrap_or_default();
                format!(
                    "{} v{}{from}{to} ({} forms)",
                    p.study,
                    p.version,
                    p.forms.len()
                )
            })
            .collect();
        all.sort();
        all.join(", ")
    }
}

/// Versions of one study, sorted by `effective_from`: overlapping periods are errors (a record would
/// match two versions); periods that no version covers are warnings (records captured then are
/// refused as invalid).
fn check_periods(study: &str, versions: &[Arc<Protocol>]) -> (Vec<String>, Vec<String>) {
    let (mut overlaps, mut gaps) = (Vec::new(), Vec::new());
    if let Some(first) = versions.first()
        && let Some(from) = first.effective_from
    {
        gaps.push(format!(
            "study {study}: no version is in force before {from} (version {} starts then)",
            first.version
        ));
    }
    for pair in versions.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let Some(b_from) = b.effective_from else {
            continue;
        };
        if a.effective_from == Some(b_from) || a.effective_to.is_some_and(|to| to >= b_from) {
            overlaps.push(format!(
                "study {study}: versions {} and {} overlap (both in force on {b_from})",
                a.version, b.version
            ));
        } else if let Some(to) = a.effective_to
            && to.succ_opt().is_some_and(|next| next < b_from)
        {
            gaps.push(format!(
                "study {study}: no version is in force from {} to {} (between versions {} and {})",
                to.succ_opt().unwrap_or(to),
                b_from.pred_opt().unwrap_or(b_from),
                a.version,
                b.version
            ));
        }
    }
    if let Some(last) = versions.last()
        && let Some(to) = last.effective_to
    {
        gaps.push(format!(
            "study {study}: no version is in force after {to} (version {} ends then)",
            last.version
        ));
    }
    (overlaps, gaps)
}

impl Protocol {
    /// Whether this version is in force on `day`.
    pub fn in_force_on(&self, day: NaiveDate) -> bool {
        self.effective_from.is_none_or(|from| from <= day)
            && self.effective_to.is_none_or(|to| day <= to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"
study: T-1
version: "1.0"
sites: [S1]
visits: [V1]
forms:
  VS:
    items:
      SYSBP: {type: integer, required: true, range: [60, 250], unit: mmHg}
      DIABP: {type: integer, range: [30, 150]}
    checks:
      - {id: VS001, assert: "DIABP < SYSBP", message: "Diastolic must be below systolic"}
"#;

    #[test]
    fn parses_a_minimal_protocol() {
        let p = Protocol::parse(MINI).unwrap();
        assert_eq!(p.version, "1.0");
        let vs = &p.forms["VS"];
        assert_eq!(vs.checks[0].items, vec!["DIABP", "SYSBP"]);
        assert!(vs.items["SYSBP"].required);
    }

    #[test]
    fn reports_every_problem_of_a_file() {
        let bad = MINI
            .replace("range: [30, 150]", "range: [30, 150], codes: [A]")
            .replace("DIABP < SYSBP", "DIABP < PULSE");
        let errs = Protocol::parse(&bad).err().unwrap();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.contains("codes is only for code items"))
        );
        assert!(errs.iter().any(|e| e.contains("reads `PULSE`")));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let errs = Protocol::parse(&MINI.replace("unit: mmHg", "unti: mmHg"))
            .err()
            .unwrap();
        assert!(errs[0].contains("unti"), "{errs:?}");
    }

    fn write_versions(dir: &Path, versions: &[(&str, &str)]) {
        for (name, periods) in versions {
            let text = MINI.replace(
                "version: \"1.0\"",
                &format!("version: \"{name}\"\n{periods}"),
            );
            std::fs::write(dir.join(format!("T-1@{name}.yaml")), text).unwrap();
        }
    }

    #[test]
    fn the_version_in_force_at_capture_is_chosen() {
        let dir = tempfile::tempdir().unwrap();
        write_versions(
            dir.path(),
            &[
                ("1", "effective_to: 2026-06-30"),
                ("2", "effective_from: 2026-07-01"),
            ],
        );
        let r = Registry::load(dir.path()).unwrap();
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(
            r.protocol_for("T-1", day("2026-06-30")).unwrap().version,
            "1"
        );
        assert_eq!(
            r.protocol_for("T-1", day("2026-07-01")).unwrap().version,
            "2"
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn overlapping_versions_are_refused_and_gaps_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_versions(
            dir.path(),
            &[
                ("1", "effective_to: 2026-07-10"),
                ("2", "effective_from: 2026-07-01"),
            ],
        );
        let err = Registry::load(dir.path()).err().unwrap();
        assert!(err.contains("versions 1 and 2 overlap"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        write_versions(
            dir.path(),
            &[
                ("1", "effective_from: 2026-01-01\neffective_to: 2026-03-31"),
                ("2", "effective_from: 2026-05-01"),
            ],
        );
        let r = Registry::load(dir.path()).unwrap();
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("from 2026-04-01 to 2026-04-30"))
        );
        assert!(r.warnings.iter().any(|w| w.contains("before 2026-01-01")));
        assert!(
            r.protocol_for("T-1", NaiveDate::from_ymd_opt(2026, 4, 15).unwrap())
                .is_none()
        );
    }

    #[test]
    fn the_shipped_demo_study_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/studies");
        let registry = Registry::load(&dir).unwrap();
        let p = registry
            .protocol_for("DEMO-001", NaiveDate::from_ymd_opt(2026, 11, 20).unwrap())
            .unwrap();
        assert!(
            p.forms.contains_key("VS") && p.forms.contains_key("AE") && p.forms.contains_key("LB")
        );
    }
}
