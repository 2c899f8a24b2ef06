//! The existing outcomes of DEMO-001 records, unchanged by the protocol model's new parts.

use super::super::parse::{parse, tests::sample};
use super::*;
use serde_json::json;
use std::path::Path;

fn registry() -> Registry {
    Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/studies")).unwrap()
}

fn run(v: &Value) -> Result<Validated, Rejected> {
    let e = parse(&serde_json::to_vec(v).unwrap(), 1 << 20).unwrap();
    validate(e, &registry())
}

fn checks(v: &Value) -> Vec<String> {
    run(v)
        .ok()
        .unwrap()
        .findings
        .into_iter()
        .map(|f| f.check)
        .collect()
}

#[test]
fn the_documented_example_is_accepted_by_protocol_2_1() {
    let v = run(&sample()).ok().unwrap();
    assert!(v.findings.is_empty(), "{:?}", v.findings);
    assert_eq!(v.protocol.version, "2.1");
}

#[test]
fn soft_problems_become_findings() {
    let mut v = sample();
    v["items"]["SYSBP"] = json!(300);
    v["items"].as_object_mut().unwrap().remove("VSDAT");
    assert_eq!(checks(&v), vec!["SYSBP", "VSDAT"]);

    let mut v = sample();
    v["items"]["DIABP"] = json!(140);
    v["items"]["SYSBP"] = json!(120);
    assert_eq!(checks(&v), vec!["VS001"]);
}

#[test]
fn a_check_with_an_absent_item_is_skipped() {
    let mut v = sample();
    v["items"].as_object_mut().unwrap().remove("DIABP");
    assert_eq!(checks(&v), vec!["DIABP"]);
}

#[test]
fn codes_and_lengths_are_soft() {
    let mut v = sample();
    v["form"] = json!("AE");
    v["items"] = json!({"AETERM": "x".repeat(201), "AESER": "maybe", "AESTDAT": "2026-11-01"});
    assert_eq!(checks(&v), vec!["AESER", "AETERM"]);
}

#[test]
fn alerts_fire_on_their_condition_only() {
    let mut v = sample();
    v["items"]["SYSBP"] = json!(185);
    assert_eq!(run(&v).ok().unwrap().alerts, vec!["HTN_CRISIS"]);
    let mut v = sample();
    v["form"] = json!("AE");
    v["items"] = json!({"AETERM": "Anaphylaxis", "AESER": "Y", "AESTDAT": "2026-11-20"});
    assert_eq!(run(&v).ok().unwrap().alerts, vec!["SAE"]);
    v["items"]["AESER"] = json!("N");
    assert!(run(&v).ok().unwrap().alerts.is_empty());
    assert!(run(&sample()).ok().unwrap().alerts.is_empty());
}

#[test]
fn structural_problems_are_invalid() {
    let cases: Vec<(&str, Value)> = vec![
        ("study", json!("NOPE")),
        ("site", json!("SITE-99")),
        ("visit", json!("WEEK99")),
        ("form", json!("XX")),
    ];
    for (field, value) in cases {
        let mut v = sample();
        v[field] = value;
        let r = run(&v).err().unwrap();
        assert_eq!(r.kind, RejectKind::Invalid, "{field}");
        assert!(
            !r.reason.contains("99") && !r.reason.contains("NOPE"),
            "{}",
            r.reason
        );
    }
    for (item, value) in [
        ("SYSBP", json!("abc")),
        ("SYSBP", json!(12.5)),
        ("VSDAT", json!("20-11-2026")),
        ("NEWITEM", json!(1)),
    ] {
        let mut v = sample();
        v["items"][item] = value;
        assert_eq!(run(&v).err().unwrap().kind, RejectKind::Invalid, "{item}");
    }
}
