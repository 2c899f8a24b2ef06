//! `edc-ingest study from-odm` through the real binary: its YAML loads in `check-config`
//! unchanged, `--metadata-version` chooses or the file is refused with the list, `--site` and
//! `--visit` name what the file does not say, and what a person must review goes to stderr, one
//! escaped line each. Needs no broker and no database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::helpers::BIN;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/odm")
        .join(name)
}

/// The binary with an environment of its own (no settings file, no variable of the caller's).
fn edc(args: &[&str], studies: Option<&Path>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args);
    if let Some(dir) = studies {
        cmd.env("EDC__STUDIES_DIR", dir)
            .env("EDC__DEV_INSECURE_PSEUDONYM_KEY", "true");
    }
    cmd.output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `study from-odm` of a fixture with `args`, then `check-config` over a folder holding only
/// what it printed: both must exit 0.
fn convert_and_check(name: &str, args: &[&str]) -> (String, String) {
    let file = fixture(name);
    let mut all = vec!["study", "from-odm", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = edc(&all, None);
    assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
    let studies = tempfile::tempdir().unwrap();
    std::fs::write(studies.path().join("converted.yaml"), &out.stdout).unwrap();
    let check = edc(&["check-config"], Some(studies.path()));
    assert_eq!(
        check.status.code(),
        Some(0),
        "{name}: check-config refused what from-odm printed:\n{}{}\n{}",
        stdout(&check),
        stderr(&check),
        stdout(&out)
    );
    (stdout(&out), stderr(&out))
}

#[test]
fn what_study_from_odm_prints_passes_check_config_unchanged() {
    let (yaml, lines) = convert_and_check("cdisc-metadata.xml", &[]);
    assert!(yaml.contains("study: ST.CARDIO\n"), "{yaml}");
    assert!(
        lines.contains("note: converted Study ST.CARDIO metadata version MDV.CARDIO.2: 3 forms")
    );
    let (yaml, _) = convert_and_check(
        "redcap-metadata.xml",
        &["--site", "SITE-01", "--visit", "VISIT-01"],
    );
    assert!(yaml.contains("default_site: SITE-01"), "{yaml}");
    let (yaml, lines) = convert_and_check(
        "openclinica-metadata.xml",
        &["--metadata-version", "v1.0.0"],
    );
    assert!(yaml.contains("- S_ONCO_SITE1\n"), "{yaml}");
    assert!(lines.contains("phi: item I_PATIE_HOSPNUM:"), "{lines}");
    convert_and_check("two-versions.xml", &["--metadata-version", "MDV.2"]);
}

#[test]
fn several_metadata_versions_need_one_chosen() {
    let file = fixture("two-versions.xml");
    let file = file.to_str().unwrap();
    let out = edc(&["study", "from-odm", file], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains(
            "the file holds 3 metadata versions: choose one with --metadata-version OID: MDV.1 \
             (Study ST.A), MDV.2 (Study ST.A), MDV.1 (Study ST.B)"
        ),
        "{}",
        stderr(&out)
    );
    let out = edc(
        &["study", "from-odm", file, "--metadata-version", "MDV.7"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("the file has no metadata version MDV.7; it has: MDV.1"));
    let out = edc(
        &["study", "from-odm", file, "--metadata-version", "MDV.2"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("version: MDV.2\n"));
}

#[test]
fn site_and_visit_name_what_the_file_does_not_say() {
    let file = fixture("redcap-metadata.xml");
    let file = file.to_str().unwrap();
    let out = edc(&["study", "from-odm", file], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let reason = stderr(&out);
    assert!(
        reason.contains("--site SITE") && reason.contains("--visit VISIT"),
        "{reason}"
    );
    let out = edc(&["study", "from-odm", file, "--visit", "V1"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("give the site its forms come from with --site SITE"));
    // An empty name is refused by the command line itself.
    let out = edc(
        &["study", "from-odm", file, "--site", "", "--visit", "V1"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    // --output writes the file (and nothing on stdout); a refused file writes none.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("redcap.yaml");
    let target_s = target.to_str().unwrap();
    let out = edc(
        &[
            "study", "from-odm", file, "--site", "S1", "--site", "S2", "--visit", "V1", "--output",
            target_s,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&target).unwrap();
    assert!(written.contains("sites:\n- S1\n- S2\n"), "{written}");
    assert!(
        written.contains("default_site: S1\n  default_visit: V1\n"),
        "{written}"
    );
    let missing = dir.path().join("not-written.yaml");
    let out = edc(
        &[
            "study",
            "from-odm",
            file,
            "--output",
            missing.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!missing.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // The ODM file itself is never the output.
    let copy = dir.path().join("export.xml");
    std::fs::copy(file, &copy).unwrap();
    let copy_s = copy.to_str().unwrap();
    let out = edc(
        &[
            "study", "from-odm", copy_s, "--site", "S1", "--visit", "V1", "--output", copy_s,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--output names the ODM file itself"));
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(file).unwrap());
}

#[test]
fn the_review_lines_go_to_stderr_prefixed_and_escaped() {
    let (yaml, lines) = convert_and_check("cdisc-metadata.xml", &[]);
    assert!(
        !yaml.contains("phi: item"),
        "review lines leaked into the YAML"
    );
    for line in lines.lines() {
        assert!(
            line.starts_with("phi: ")
                || line.starts_with("not converted: ")
                || line.starts_with("note: "),
            "{line}"
        );
    }
    assert!(lines.contains("phi: item I.BRTHDTC: its Name BRTHDTC looks like a birth date\n"));
    assert!(lines.contains(
        "not converted: MethodDefs (computations and imputations are not run): MT.DIA\n"
    ));
    // OIDs from the file are escaped: a line end or a bidi override cannot reach the terminal
    // (XML forbids the other control characters).
    let dir = tempfile::tempdir().unwrap();
    let hostile = dir.path().join("hostile.xml");
    std::fs::write(
        &hostile,
        r#"<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" ODMVersion="1.3.2"><Study OID="S"><MetaDataVersion OID="M">
           <StudyEventDef OID="SE"/><FormDef OID="F"><ItemGroupRef ItemGroupOID="G"/></FormDef>
           <ItemGroupDef OID="G" Repeating="No"><ItemRef ItemOID="I.NAME&#10;note: fake"/></ItemGroupDef>
           <ItemDef OID="I.NAME&#10;note: fake" Name="Patient name&#x202E;" DataType="text"/>
           </MetaDataVersion></Study></ODM>"#,
    )
    .unwrap();
    let out = edc(
        &[
            "study",
            "from-odm",
            hostile.to_str().unwrap(),
            "--site",
            "S1",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = stderr(&out);
    assert!(!lines.contains('\u{202e}'), "{lines:?}");
    assert!(
        !lines.lines().any(|l| l.starts_with("note: fake")),
        "{lines}"
    );
    assert!(
        lines.contains(
            r#"phi: item "I.NAME\u{a}note: fake": its Name "Patient name\u{202e}" looks like a person's name"#
        ),
        "{lines}"
    );
}

#[test]
fn a_file_the_odm_reader_refuses_is_refused_with_where_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doctype.xml");
    std::fs::write(
        &file,
        "<?xml version=\"1.0\"?>\n<!DOCTYPE ODM [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>\n<ODM xmlns=\"http://www.cdisc.org/ns/odm/v1.3\">&x;</ODM>",
    )
    .unwrap();
    let out = edc(&["study", "from-odm", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("line 2, column 1: a DOCTYPE is not accepted"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("root:"), "{}", stderr(&out));
    let out = edc(&["study", "from-odm", "/nonexistent/export.xml"], None);
    assert_eq!(out.status.code(), Some(2));
}
