//! Real ODM exports, as their sources published them (tests/data/odm/real, each folder with its
//! SOURCE.md): a REDCap longitudinal project and a REDCap classic project (REDCap-ETL's test
//! projects), an ODM 1.3.2 snapshot of odmlib's test data, OpenEDC's example project (metadata and
//! clinical data in two files: odm_real/openedc.rs) and CDISC's matrix-CRF example. Each
//! goes through the real binary as an integrator would take it: `study from-odm` into a studies
//! folder, `check-config` on it unchanged, `odm import`, the daemon storing what it publishes;
//! then `item_values` must hold every value of the file, in its type's canonical form, as an
//! oracle reading the file with roxmltree (not with edc-ingest's reader) says (odm_real/oracle.rs);
//! importing it again stores nothing new.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

#[path = "odm_real/openedc.rs"]
mod openedc;
#[path = "odm_real/oracle.rs"]
mod oracle;

const WAIT: Duration = Duration::from_secs(60);

/// One real export and what an integrator gives for what it does not say.
struct Export {
    /// The file `odm import` reads.
    file: &'static str,
    /// The file `study from-odm` reads when the metadata is a file of its own, else `file`.
    metadata: Option<&'static str>,
    site: &'static str,
    visit: Option<&'static str>,
}

fn path(file: &str) -> PathBuf {
    repo().join("tests/data/odm/real").join(file)
}

/// `--site S [--visit V]`, as both commands take them.
fn given(export: &Export) -> Vec<&'static str> {
    let mut args = vec!["--site", export.site];
    if let Some(v) = export.visit {
        args.extend(["--visit", v]);
    }
    args
}

/// `study from-odm` of the file into `dir`: the items it made `phi` (its `phi:` lines on stderr).
fn from_odm(env: &TestEnv, export: &Export, dir: &std::path::Path) -> Vec<String> {
    let file = path(export.metadata.unwrap_or(export.file));
    let out_file = dir.join("study.yaml");
    let mut args = vec![
        "study",
        "from-odm",
        file.to_str().unwrap(),
        "--output",
        out_file.to_str().unwrap(),
    ];
    args.extend(given(export));
    let out = edc(env, &[], &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: {}",
        export.file,
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("phi: item "))
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect()
}

/// `item_values` of this test's database, keyed as the oracle keys them.
async fn item_values(env: &TestEnv) -> BTreeMap<String, Option<String>> {
    let rows = env
        .db()
        .await
        .query(
            "SELECT concat_ws(' ', subject, visit, visit_repeat, form, form_repeat, \
                    coalesce(item_group, '-'), coalesce(group_repeat, '-'), item), value \
             FROM item_values",
            &[],
        )
        .await
        .unwrap();
    let mut all = BTreeMap::new();
    for r in &rows {
        let key: String = r.get(0);
        assert!(all.insert(key.clone(), r.get(1)).is_none(), "{key} twice");
    }
    all
}

/// Every difference between the stored values and the oracle's, one line each; `phi` items are
/// checked to be pseudonyms, never their text.
fn differences(
    stored: &BTreeMap<String, Option<String>>,
    want: &BTreeMap<String, String>,
    phi: &[String],
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, value) in want {
        let is_phi = phi.iter().any(|p| key.ends_with(&format!(" {p}")));
        match stored.get(key) {
            None => out.push(format!("missing: {key} (the file says {value:?})")),
            Some(None) => out.push(format!("null: {key} (the file says {value:?})")),
            Some(Some(got)) if is_phi => {
                if !got.starts_with("psn:") || got.contains(value.as_str()) {
                    out.push(format!(
                        "{key}: a phi item stored other than as its pseudonym"
                    ));
                }
            }
            Some(Some(got)) if got != value => {
                out.push(format!("{key}: stored {got:?}, the file says {value:?}"))
            }
            Some(Some(_)) => {}
        }
    }
    for key in stored.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("not in the file: {key}"));
    }
    out
}

/// The whole path for one file, with its oracle: `study from-odm`, `check-config`, `odm import`,
/// the daemon, `item_values`; then the file imported again stores nothing new; `values` is the count of ItemData in the file (the oracle must see
/// them all). Returns the import's JSON report.
async fn round_trip(export: &Export, phi_expected: &[&str], values: usize) -> Value {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let studies = dir.path().display().to_string();
    let vars = [("EDC__STUDIES_DIR", studies.as_str())];

    // Act: the protocol converted from the file, checked as it is.
    let phi = from_odm(&env, export, dir.path());
    assert_eq!(phi, phi_expected, "{}: the phi guesses", export.file);
    let check = edc(&env, &vars, &["check-config"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));

    // Act: the file imported; the daemon drains it.
    let daemon = Daemon::start(env.settings(&vars));
    let file = path(export.file);
    let mut args = vec!["odm", "import", file.to_str().unwrap(), "--output", "json"];
    args.extend(given(export));
    let out = edc(&env, &vars, &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}: {}",
        export.file,
        text(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let xml = std::fs::read_to_string(&file).unwrap();
    let metadata = match export.metadata {
        Some(m) => std::fs::read_to_string(path(m)).unwrap(),
        None => xml.clone(),
    };
    let want = oracle::expected(&metadata, &xml, export.visit);
    assert_eq!(
        want.values.len(),
        values,
        "{}: the oracle's values",
        export.file
    );
    assert_eq!(report["published"], want.forms as u64, "{report}");
    daemon.wait_settled(want.forms as u64, WAIT).await;

    // Assert: one record per form instance, each value the file's, in its canonical form.
    let stored = env.count("SELECT count(*) FROM crf_records").await;
    assert_eq!(stored, want.forms as i64, "{}: records stored", export.file);
    let letters = env.count("SELECT count(*) FROM rejections").await;
    assert_eq!(letters, 0, "{}: nothing refused", export.file);
    let values = item_values(&env).await;
    let diff = differences(&values, &want.values, &phi);
    assert!(
        diff.is_empty(),
        "{}: item_values differ from the file:\n{}",
        export.file,
        diff.join("\n")
    );

    // Assert: a phi item's text is in no row of the tables a value can reach (values of 6
    // characters or more: a shorter one could be part of anything).
    let db = env.db().await;
    for (key, value) in &want.values {
        if !phi.iter().any(|p| key.ends_with(&format!(" {p}"))) || value.len() < 6 {
            continue;
        }
        for table in [
            "crf_records",
            "audit_trail",
            "data_queries",
            "outbox",
            "rejections",
        ] {
            let sql = format!("SELECT count(*) FROM {table} t WHERE strpos(t::text, $1) > 0");
            let n: i64 = db.query_one(&sql, &[value]).await.unwrap().get(0);
            assert_eq!(n, 0, "{key}: its text is in {table}");
        }
    }

    // Act: the same file imported again.
    let again = edc(&env, &vars, &args);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    daemon.wait_settled(2 * want.forms as u64, WAIT).await;

    // Assert: nothing new is stored, and the values are the same.
    let stored = env.count("SELECT count(*) FROM crf_records").await;
    assert_eq!(stored, want.forms as i64, "{}: imported again", export.file);
    assert_eq!(item_values(&env).await, values, "{}", export.file);
    daemon.stop().await;
    env.cleanup().await;
    report
}

#[tokio::test]
async fn redcap_longitudinal_project_is_stored_as_its_values() {
    let export = Export {
        file: "redcap-etl/Visits.REDCap.xml",
        metadata: None,
        site: "SITE.IU",
        visit: None,
    };
    let report = round_trip(&export, &["name", "email1", "email2", "phone", "dob"], 49).await;
    assert_eq!(report["published"], 10, "{report}");
}

#[tokio::test]
async fn redcap_classic_project_is_stored_as_its_values() {
    // A classic project: no sites, no events; its repeating instrument is 5 form repeats.
    let export = Export {
        file: "redcap-etl/MultipleRootInstruments.REDCap.xml",
        metadata: None,
        site: "SITE.IU",
        visit: Some("V.ONCE"),
    };
    let report = round_trip(&export, &["test_id"], 29).await;
    assert_eq!(report["published"], 7, "{report}");
}

#[tokio::test]
async fn odmlib_snapshot_is_stored_as_its_values() {
    // Its one site is an AdminData Location no SubjectData refers to: --site names it.
    let export = Export {
        file: "odmlib/odm-data-snapshot.xml",
        metadata: None,
        site: "ISSS",
        visit: None,
    };
    let report = round_trip(&export, &["IT.BRTHDAT"], 165).await;
    assert_eq!(report["published"], 16, "{report}");
}

#[tokio::test]
async fn cdisc_matrix_example_in_the_odm_2_shape_is_refused_whole() {
    // CDISC's example declares ODM 1.3.2 but has the ODM 2.0 shape (an ItemGroupDef of Type
    // Form, ItemGroupData under StudyEventData): refused whole, as documented, by both commands.
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let studies = dir.path().display().to_string();
    let vars = [("EDC__STUDIES_DIR", studies.as_str())];
    let file = path("cdisc/Hypercholesterolemia_CV_Risk_factors_FH_CRF_1_3_2.xml");
    let file = file.to_str().unwrap();
    let shape = "an ODM 2.0-shaped structure";

    let out = edc(&env, &vars, &["study", "from-odm", file, "--site", "S"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let why = format!("line 13, column 17: {shape}"); // its first ItemGroupRef in a StudyEventDef
    assert!(text(&out).contains(&why), "{}", text(&out));
    assert!(out.stdout.is_empty(), "no protocol printed");

    // (Against a studies folder that loads: the file is refused before any study is looked up.)
    let loads = repo().join("tests/data/odm-import").display().to_string();
    let args = [
        "odm", "import", file, "--site", "S", "--visit", "SE.MH", "--output", "json",
    ];
    let out = edc(&env, &[("EDC__STUDIES_DIR", &loads)], &args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    // Where ClinicalData sits inside Study.
    let why = format!("line 128, column 9: {shape}");
    let refused = report["file_refused"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(refused.starts_with(&why), "{report}");
    assert_eq!(report["file_refused"]["code"], "file_refused", "{report}");
    assert_eq!(
        (&report["forms_read"], &report["published"]),
        (&0.into(), &0.into())
    );
    env.cleanup().await;
}
