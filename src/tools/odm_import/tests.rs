//! The first pass and the messages of `odm import`, without a broker, over the hand-written
//! tests/data/odm-import/import.xml (study ST.IMPORT, 3 subjects, 11 forms) and variants of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::odm::model::FormInstance;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/odm-import")
        .join(name)
}

fn registry() -> Registry {
    Registry::load(&data("")).expect("ST.IMPORT loads")
}

fn fixture() -> String {
    std::fs::read_to_string(data("import.xml")).unwrap()
}

/// The fixture with `from` replaced by `to` (exactly once), in a file of its own.
fn variant(from: &str, to: &str) -> tempfile::NamedTempFile {
    let text = fixture();
    assert_eq!(text.matches(from).count(), 1, "{from}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text.replace(from, to)).unwrap();
    file
}

fn options(dry_run: bool, site: bool) -> Options {
    Options {
        dry_run,
        defaults: Defaults {
            site: site.then(|| "SITE.C".to_string()),
            visit: site.then(|| "SE.BASE".to_string()),
        },
        limits: Limits::default(),
    }
}

fn checked(path: &Path, opts: &Options) -> Report {
    let (registry, key) = (registry(), Pseudonymizer::insecure_dev());
    let ctx = Context {
        registry: &registry,
        pseudonymizer: &key,
        options: opts,
    };
    check(path, &ctx, &Progress::hidden()).unwrap()
}

/// The 1-based line of the only line of the fixture holding `needle`.
fn line_of(needle: &str) -> u64 {
    let text = fixture();
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{needle}");
    lines[0] as u64
}

#[test]
fn the_first_pass_counts_forms_by_study_and_form_transactions_and_what_was_skipped() {
    let r = checked(&data("import.xml"), &options(false, true));
    assert_eq!((r.subjects, r.forms_read, r.publishable), (3, 11, 11));
    assert_eq!(r.file_refused, None);
    assert_eq!(r.tally.refused_total(), 0);
    assert_eq!(
        r.tally.forms["ST.IMPORT"],
        BTreeMap::from([("F.AE".into(), 3), ("F.DM".into(), 3), ("F.VS".into(), 5)])
    );
    assert_eq!(
        r.tally.transactions,
        BTreeMap::from([("Insert", 1), ("Remove", 1), ("Update", 1), ("none", 8)])
    );
    assert_eq!(r.skipped.extension_elements["urn:example:vendor"], 1);
    assert_eq!(r.skipped.extension_attributes["urn:example:vendor"], 2);
    assert_eq!(r.skipped.odm_elements["Annotation"], 1);
    assert_eq!(
        r.bytes,
        std::fs::metadata(data("import.xml")).unwrap().len()
    );
    // A real import validates nothing itself: the daemon does.
    assert_eq!(r.validation, None);
    assert_eq!(r.exit_code(), 1, "nothing published yet");
}

#[test]
fn without_site_and_visit_the_forms_that_lack_them_are_refused_where_they_start() {
    let r = checked(&data("import.xml"), &options(false, false));
    assert_eq!((r.forms_read, r.publishable), (11, 9));
    assert_eq!(r.tally.refused, BTreeMap::from([("no_site", 2)]));
    let at: Vec<(u64, u64)> = r.refusals.iter().map(|l| (l.line, l.column)).collect();
    let vs = line_of("2026-11-05T08:00:00Z") - 1;
    assert_eq!(at, vec![(vs, 7), (vs + 7, 7)]);
    assert!(
        r.refusals[0].reason.contains("no SiteRef"),
        "{:?}",
        r.refusals
    );
}

#[test]
fn a_dry_run_validates_each_form_as_the_daemon_would_with_nothing_stored() {
    let r = checked(&data("import.xml"), &options(true, true));
    let v = r.validation.clone().unwrap();
    // S-001's SYSBP 300 is out of range; S-002's Update names only PULSE, so against nothing
    // stored its required items are missing; its Remove has nothing to validate.
    assert_eq!(
        (v.valid, v.queried, v.invalid, v.not_validated),
        (8, 2, 0, 1)
    );
    assert_eq!(
        v.findings,
        BTreeMap::from([("I.SYSBP".into(), 2), ("I.VSDAT".into(), 1)])
    );
    assert_eq!(r.exit_code(), 0);
    // A value past the hard range is invalid: refused with the form's position.
    let f = variant("Value=\"300\"", "Value=\"999\"");
    let r = checked(f.path(), &options(true, true));
    assert_eq!(r.tally.refused, BTreeMap::from([("invalid", 1)]));
    assert_eq!(r.refusals[0].line, line_of("Value=\"300\"") - 4);
    assert_eq!(r.exit_code(), 1);
}

#[test]
fn a_file_refused_at_the_end_is_refused_whole_with_its_line_and_column() {
    let f = variant("</ClinicalData>\n</ODM>", "</ClinicalData>\n</ODM");
    let r = checked(f.path(), &options(false, true));
    let refused = r.file_refused.clone().expect("refused");
    assert_eq!(refused.code, "file_refused");
    assert_eq!(refused.line, line_of("</ClinicalData>") + 1);
    assert!(
        refused
            .reason
            .starts_with(&format!("line {}, column", refused.line))
    );
    assert_eq!(r.exit_code(), 2);
    assert!(r.text().contains("nothing was published"), "{}", r.text());
}

#[test]
fn a_refused_value_never_reaches_the_report() {
    let f = variant("Value=\"128\"", "Value=\"ZQX Jane Roe 12\"");
    let r = checked(f.path(), &options(false, true));
    assert_eq!(r.tally.refused, BTreeMap::from([("bad_value", 1)]));
    assert_eq!(r.refusals[0].line, line_of("Value=\"128\"") - 4);
    for shown in [r.text(), r.json()] {
        assert!(
            !shown.contains("ZQX") && !shown.contains("S-001"),
            "{shown}"
        );
    }
}

#[test]
fn each_message_is_one_form_alone_and_its_id_is_the_same_on_every_import() {
    let (registry, key) = (registry(), Pseudonymizer::insecure_dev());
    let opts = options(false, true);
    let ctx = Context {
        registry: &registry,
        pseudonymizer: &key,
        options: &opts,
    };
    let read = || {
        let input = std::fs::read(data("import.xml")).unwrap();
        Messages::new(&input[..], &ctx)
            .map(|m| m.unwrap())
            .collect::<Vec<Message>>()
    };
    let (first, second) = (read(), read());
    assert_eq!(first.len(), 11);
    let ids: Vec<Uuid> = first.iter().map(|m| m.id).collect();
    assert_eq!(ids, second.iter().map(|m| m.id).collect::<Vec<_>>());
    let distinct: std::collections::BTreeSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 11);
    let records: std::collections::BTreeSet<Uuid> = first.iter().map(|m| m.record_id).collect();
    assert_eq!(
        records.len(),
        11,
        "repeats of a form are records of their own"
    );
    for m in &first {
        let forms: Vec<FormInstance> = ClinicalReader::new(&m.document[..], Limits::default())
            .map(|f| f.unwrap())
            .collect();
        assert_eq!(forms.len(), 1);
        let f = &forms[0];
        assert_eq!(f.study_oid, "ST.IMPORT");
        assert_eq!(f.metadata_version_oid.as_deref(), Some("MDV.1"));
        assert!(f.site_oid.is_some() && f.event_oid.is_some() && f.audit.is_some());
    }
    // The repeat keys and transactions travel as read.
    let doc = |i: usize| String::from_utf8(first[i].document.clone()).unwrap();
    assert!(
        doc(2).contains("StudyEventRepeatKey=\"1\"")
            && doc(3).contains("StudyEventRepeatKey=\"2\"")
    );
    assert!(doc(5).contains("FormRepeatKey=\"2\""));
    assert!(doc(6).contains("TransactionType=\"Update\"") && doc(6).contains("<ReasonForChange>"));
    assert!(doc(9).contains("<SiteRef LocationOID=\"SITE.C\"/>"));
    // A changed value is another message of the same record.
    let changed = std::fs::read_to_string(data("import.xml"))
        .unwrap()
        .replace("Value=\"128\"", "Value=\"129\"");
    let again: Vec<Message> = Messages::new(changed.as_bytes(), &ctx)
        .map(|m| m.unwrap())
        .collect();
    assert_eq!(again[0].record_id, first[0].record_id);
    assert_ne!(again[0].id, first[0].id);
    assert_eq!(again[1].id, first[1].id);
}
