//! The protocols in force: every file of `studies_dir` loaded at once (a broken file refuses the
//! whole set), the versions of each study ordered by their periods, and the version in force on a
//! record's capture date.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;

use super::Protocol;
use crate::failure::Failure;

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
        let mut texts = Vec::new();
        for path in &paths {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            match std::fs::read_to_string(path) {
                Ok(t) => texts.push((name.into_owned(), t)),
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
        if paths.is_empty() {
            problems.push(format!("no protocol files (*.yaml) in {}", dir.display()));
        }
        let texts: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (&n[..], &t[..])).collect();
        match (Registry::from_texts(&texts), problems.is_empty()) {
            (Ok(registry), true) => Ok(registry),
            (Ok(_), false) => Err(problems.join("\n")),
            (Err(more), _) => {
                problems.push(more);
                Err(problems.join("\n"))
            }
        }
    }

    /// [`Registry::load`] of protocol texts already read, each with its file name: the same checks
    /// (every file parses, no two versions of a study overlap), for tests and fuzz targets.
    #[doc(hidden)]
    pub fn from_texts(files: &[(&str, &str)]) -> Result<Registry, String> {
        let mut problems = Vec::new();
        let mut registry = Registry::default();
        for (name, text) in files {
            match Protocol::parse(text) {
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
}
