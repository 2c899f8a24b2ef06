use std::collections::BTreeMap;

use serde_json::Value;

use super::*;

fn at(line: u64, column: u64) -> Position {
    Position { line, column }
}

fn refusal(line: u64) -> Located {
    Located::new(
        at(line, 7),
        "bad_value",
        format!(
            "the form at line {line}, column 7 (FormOID \"F.VS\") is refused: item I.SYSBP must be an integer"
        ),
    )
}

/// A report of 3 forms read, 2 publishable and published, 1 refused.
fn report() -> Report {
    let mut r = Report {
        bytes: 5000,
        subjects: 2,
        forms_read: 3,
        publishable: 2,
        published: 2,
        queue: Some("edc.records".into()),
        batch_id: Some("b1f2c3d4-0000-4000-8000-000000000001".into()),
        ..Report::default()
    };
    r.tally.forms.insert(
        "ST.IMPORT".into(),
        BTreeMap::from([("F.VS".into(), 1), ("F.AE".into(), 1)]),
    );
    r.tally.transactions.insert("none", 2);
    r.tally.actions.insert("snapshot", 2);
    r.refuse(refusal(40));
    r.skipped
        .extension_elements
        .insert("urn:x:\u{1b}[2J".into(), 3);
    r.skipped.odm_elements.insert("Annotation".into(), 1);
    r
}

#[test]
fn refusals_are_counted_by_reason_and_listed_up_to_a_bound() {
    let mut r = Report::default();
    for line in 0..(MAX_LISTED as u64 + 25) {
        r.refuse(refusal(line + 1));
    }
    r.refuse(Located::new(at(9, 1), "unknown_form", "x".into()));
    assert_eq!(r.refusals.len(), MAX_LISTED);
    assert_eq!(r.refusals_not_listed, 26);
    assert_eq!(r.tally.refused["bad_value"], MAX_LISTED as u64 + 25);
    assert_eq!(r.tally.refused["unknown_form"], 1);
    assert_eq!(r.refusals[0].line, 1, "in file order");
    assert!(r.text().contains("... and 26 more"));
}

#[test]
fn the_exit_code_says_whether_every_form_was_published() {
    let mut r = report();
    assert_eq!(r.exit_code(), 1, "a form was refused");
    r.tally.refused.clear();
    assert_eq!(r.exit_code(), 0);
    r.published = 1;
    assert_eq!(r.exit_code(), 1, "a form was not confirmed");
    r.dry_run = true;
    assert_eq!(r.exit_code(), 0, "a dry run publishes nothing");
    r.file_refused = Some(Located::new(at(90, 3), "file_refused", "x".into()));
    assert_eq!(r.exit_code(), 2);
}

#[test]
fn the_text_says_each_count_and_escapes_what_the_file_named() {
    let t = report().text();
    for expected in [
        "odm import: 5000 bytes, 2 subjects, 3 forms read\n",
        "2 of 2 forms published to edc.records (confirmed by the broker)\n",
        "batch b1f2c3d4-0000-4000-8000-000000000001 (edc-ingest batch status b1f2c3d4-0000-4000-8000-000000000001)\n",
        "forms by study and form:\n  ST.IMPORT  F.AE  1\n  ST.IMPORT  F.VS  1\n",
        "transactions: none 2\n",
        "refused: 1 (bad_value 1)\n  bad_value: the form at line 40, column 7",
        "skipped extension elements: \"urn:x:\\u{1b}[2J\" 3\n",
        "skipped ODM elements: Annotation 1\n",
    ] {
        assert!(t.contains(expected), "{expected:?} not in:\n{t}");
    }
    assert!(!t.contains('\u{1b}'));
    let mut dry = report();
    dry.dry_run = true;
    dry.validation = Some(Validation {
        valid: 1,
        queried: 1,
        findings: BTreeMap::from([("I.SYSBP".into(), 1)]),
        ..Validation::default()
    });
    let t = dry.text();
    assert!(t.starts_with("odm import --dry-run: "), "{t}");
    assert!(t.contains("(dry run: nothing was published)"), "{t}");
    assert!(
        t.contains("validation: 1 valid, 1 queried, 0 invalid, 0 not validated"),
        "{t}"
    );
    assert!(t.contains("findings by check: I.SYSBP 1\n"), "{t}");
}

#[test]
fn the_json_holds_the_same_counts_under_stable_names() {
    let r = report();
    let v: Value = serde_json::from_str(&r.json()).unwrap();
    assert_eq!(v["forms_read"], 3);
    assert_eq!(v["published"], 2);
    assert_eq!(v["forms"]["ST.IMPORT"]["F.VS"], 1);
    assert_eq!(v["transactions"]["none"], 2);
    assert_eq!(v["refused"]["bad_value"], 1);
    assert_eq!(v["refusals"][0]["line"], 40);
    assert_eq!(v["refusals"][0]["column"], 7);
    assert_eq!(v["refusals"][0]["code"], "bad_value");
    assert_eq!(v["skipped"]["extension_elements"]["urn:x:\u{1b}[2J"], 3);
    assert_eq!(v["file_refused"], Value::Null);
    assert_eq!(v["validation"], Value::Null);
    assert!(v.get("stamp").is_none());
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for key in [
        "dry_run",
        "bytes",
        "subjects",
        "publishable",
        "queue",
        "batch_id",
        "actions",
        "capture_times",
        "unreadable_timestamps",
        "refusals_not_listed",
        "late_audit_records",
        "notes",
    ] {
        assert!(keys.contains(&key), "{key} not in {keys:?}");
    }
}
