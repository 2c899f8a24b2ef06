//! The protocol model's new parts, through validation: repeating groups and their rows, the new
//! item fields, hard checks, `when_missing`, and the partial-value rule (a table of decided and
//! undecidable cases).

use std::path::Path;

use serde_json::{Value, json};

use super::super::parse::{parse, tests::sample};
use super::*;
use crate::protocol::Protocol;

fn registry() -> Registry {
    Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/studies")).unwrap()
}

/// A DEMO-002 record of `form` with `items`.
pub fn demo2(form: &str, items: Value) -> Value {
    let mut v = sample();
    v["study"] = json!("DEMO-002");
    v["site"] = json!("SITE-01");
    v["visit"] = json!("SE.BASELINE");
    v["form"] = json!(form);
    v["items"] = items;
    v
}

fn run(v: &Value) -> Result<Validated, Rejected> {
    validate(
        parse(&serde_json::to_vec(v).unwrap(), 1 << 20).unwrap(),
        &registry(),
    )
}

fn ok(v: &Value) -> Validated {
    match run(v) {
        Ok(x) => x,
        Err(r) => panic!("refused: {}", r.reason),
    }
}

fn refused(v: &Value) -> String {
    match run(v) {
        Ok(_) => panic!("accepted"),
        Err(r) => {
            assert_eq!(r.kind, RejectKind::Invalid);
            r.reason
        }
    }
}

fn messages(v: &Validated) -> Vec<(String, String)> {
    v.findings
        .iter()
        .map(|f| (f.check.clone(), f.message.clone()))
        .collect()
}

fn ae_row(start: &str, end: Option<&str>) -> Value {
    let mut row =
        json!({"I.AETERM": "Headache", "I.AESTDAT": start, "I.AESER": false, "I.AESEV": "01"});
    if let Some(e) = end {
        row["I.AEENDAT"] = json!(e);
    }
    row
}

#[test]
fn an_array_of_rows_is_stored_as_an_object_by_repeat_key_with_canonical_values() {
    let v = ok(&demo2(
        "F.AE",
        json!({"I.AEYN": true, "IG.AELOG": [ae_row("2024-03", Some("2024-04-02")), ae_row("2024", None)]}),
    ));
    assert!(v.findings.is_empty(), "{:?}", v.findings);
    let log = &v.envelope.items["IG.AELOG"];
    assert_eq!(log.as_object().unwrap().len(), 2);
    assert_eq!(
        log["1"]["I.AESEV"],
        json!("1"),
        "integer code without its zero"
    );
    assert_eq!(log["1"]["I.AESTDAT"], json!("2024-03"));
    assert_eq!(log["2"]["I.AESTDAT"], json!("2024"));

    let ex = ok(&demo2(
        "F.EX",
        json!({"I.EXSTDTC": "2024-03-01T08:00+00:00", "I.EXENDTC": "2024-03-01T09:30:00.50Z", "I.EXTPT": "08:00", "I.EXVOL": 250}),
    ));
    assert!(ex.findings.is_empty(), "{:?}", ex.findings);
    let items = &ex.envelope.items;
    assert_eq!(items["I.EXSTDTC"], json!("2024-03-01T08:00:00Z"));
    assert_eq!(items["I.EXENDTC"], json!("2024-03-01T09:30:00.5Z"));
    assert_eq!(items["I.EXTPT"], json!("08:00:00"));
}

#[test]
fn rows_are_ordered_by_repeat_key_and_named_without_printing_uploader_text() {
    let mut bad = ae_row("2024-03", None);
    bad.as_object_mut().unwrap().remove("I.AESER");
    let v = ok(&demo2(
        "F.AE",
        json!({"I.AEYN": true, "IG.AELOG": {"10": ae_row("2024", None), "2": bad.clone(), "Ada Lovelace": bad}}),
    ));
    let keys: Vec<&String> = v.envelope.items["IG.AELOG"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys.len(), 3);
    assert_eq!(
        messages(&v),
        vec![
            (
                "I.AESER".into(),
                "IG.AELOG row 2: I.AESER is required but missing".into()
            ),
            (
                "I.AESER".into(),
                "IG.AELOG, the row at position 3: I.AESER is required but missing".into()
            ),
        ]
    );
    assert_eq!(
        v.findings[1].row,
        Some(RowRef {
            group: "IG.AELOG".into(),
            key: "Ada Lovelace".into()
        })
    );
}

#[test]
fn structural_problems_in_rows_are_invalid_and_name_the_row_not_its_key() {
    let cases = [
        (
            json!({"Ada": {"I.AESTDAT": "2024-02-30"}}),
            "IG.AELOG, the row at position 1: item I.AESTDAT is not a partial date",
        ),
        (
            json!([ae_row("2024", None), {"I.AESER": "yes"}]),
            "IG.AELOG row 2: item I.AESER must be true or false",
        ),
        (
            json!([{"I.NOPE": 1, "Ada": 2}]),
            "IG.AELOG row 1: 2 item(s) not defined by the group",
        ),
        (
            json!([ae_row("2024", None), "Ada"]),
            "group IG.AELOG: the row at position 2 is not an object of items",
        ),
        (
            json!({"": ae_row("2024", None)}),
            "group IG.AELOG: the row at position 1 has an empty repeat key",
        ),
        (
            json!("Ada"),
            "group IG.AELOG must be an array of rows or an object of rows by repeat key",
        ),
    ];
    for (group, expect) in cases {
        let reason = refused(&demo2("F.AE", json!({"I.AEYN": true, "IG.AELOG": group})));
        assert!(reason.starts_with(expect), "{reason}");
        assert!(!reason.contains("Ada"), "{reason}");
    }
}

#[test]
fn an_empty_or_null_group_is_no_rows() {
    let v = ok(&demo2("F.AE", json!({"I.AEYN": false, "IG.AELOG": []})));
    assert_eq!(v.envelope.items["IG.AELOG"], json!({}));
    let v = ok(&demo2("F.AE", json!({"I.AEYN": false, "IG.AELOG": null})));
    assert_eq!(v.envelope.items["IG.AELOG"], Value::Null);
}

#[test]
fn hard_ranges_refuse_soft_ranges_and_digits_query() {
    let cm = |dose: Value| {
        demo2(
            "F.CM",
            json!({"IG.CMLOG": [{"I.CMTRT": "Aspirin", "I.CMDOSE": dose}]}),
        )
    };
    let reason = refused(&cm(json!(200000)));
    assert_eq!(
        reason,
        "IG.CMLOG row 1: item I.CMDOSE is outside its hard range [0, 100000] mg"
    );
    let v = ok(&cm(json!(5000.1234)));
    assert_eq!(
        messages(&v),
        vec![
            (
                "I.CMDOSE".into(),
                "IG.CMLOG row 1: I.CMDOSE is above the expected range [0, 4000] mg".into()
            ),
            (
                "I.CMDOSE".into(),
                "IG.CMLOG row 1: I.CMDOSE has more than 3 digits after the decimal point".into()
            ),
        ]
    );
    let v = ok(&cm(json!(12345.12345)));
    assert!(
        v.findings.iter().any(|f| f
            .message
            .ends_with("I.CMDOSE has more than 8 significant digits")),
        "{:?}",
        v.findings
    );
    assert!(ok(&cm(json!(100.500))).findings.is_empty());
}

#[test]
fn a_failing_hard_check_refuses_the_record_with_its_own_message() {
    let ex = |end: &str| {
        demo2(
            "F.EX",
            json!({"I.EXSTDTC": "2024-03-01T10:00+01:00", "I.EXENDTC": end, "I.EXTPT": "10:00"}),
        )
    };
    assert_eq!(
        refused(&ex("2024-03-01T08:59Z")),
        "check EX01 failed: The infusion cannot end before it starts"
    );
    // Offsets are applied: 09:00Z is the start itself.
    assert!(ok(&ex("2024-03-01T09:00Z")).findings.is_empty());
}

#[test]
fn when_missing_query_raises_a_query_and_skip_does_not() {
    let v = ok(&demo2(
        "F.CM",
        json!({"IG.CMLOG": [{"I.CMTRT": "Aspirin", "I.CMSTDAT": "2024-01"}]}),
    ));
    assert_eq!(
        messages(&v),
        vec![(
            "CM02".into(),
            "IG.CMLOG row 1: check CM02 could not be evaluated: I.CMDOSE is missing; please review: The dose must be recorded and above zero".into()
        )]
    );
}

#[test]
fn alerts_fire_if_any_row_matches() {
    let mut serious = ae_row("2024-03", None);
    serious["I.AESER"] = json!(true);
    let v = ok(&demo2(
        "F.AE",
        json!({"I.AEYN": true, "IG.AELOG": [ae_row("2024", None), serious]}),
    ));
    assert_eq!(v.alerts, vec!["SAE"]);
    let v = ok(&demo2(
        "F.AE",
        json!({"I.AEYN": true, "IG.AELOG": [ae_row("2024", None)]}),
    ));
    assert!(v.alerts.is_empty());
}

#[test]
fn phi_items_in_rows_become_pseudonyms_named_by_group_and_item() {
    use crate::pipeline::{Pseudonymizer, deidentify::PSEUDONYM_PREFIX};
    let body = demo2(
        "F.AE",
        json!({"I.AEYN": true, "IG.AELOG": {"1": ae_row("2024", None), "Ada": ae_row("2023", None)}}),
    );
    let p = Pseudonymizer::insecure_dev();
    let d = crate::pipeline::prepare(
        &serde_json::to_vec(&body).unwrap(),
        1 << 20,
        &registry(),
        &p,
    )
    .unwrap();
    let expect = format!(
        "{PSEUDONYM_PREFIX}{}",
        p.pseudonym("item:IG.AELOG/I.AETERM", "Headache")
    );
    assert_eq!(d.items["IG.AELOG"]["1"]["I.AETERM"], json!(expect));
    assert_eq!(d.items["IG.AELOG"]["Ada"]["I.AETERM"], json!(expect));
    assert!(!format!("{d:?}").contains("Headache"));
    assert_eq!(d.items["IG.AELOG"]["1"]["I.AESTDAT"], json!("2024"));
}

/// A protocol with partial and complete dates and times, for the partial-value rule.
fn partial_protocol(assert: &str) -> Protocol {
    let yaml = format!(
        r#"
study: P
version: "1"
sites: [S]
visits: [V]
forms:
  F:
    items:
      A: {{type: partial_date}}
      B: {{type: partial_date}}
      C: {{type: partial_date}}
      D: {{type: partial_date}}
      E: {{type: partial_date}}
      S: {{type: partial_datetime}}
      T: {{type: datetime}}
      PT: {{type: partial_time}}
    checks:
      - {{id: X, assert: "{assert}", message: M}}
"#
    );
    Protocol::parse(&yaml).unwrap()
}

enum Expect {
    Pass,
    Fail,
    Undecidable(&'static str),
}

#[test]
fn the_partial_value_rule() {
    use Expect::*;
    let cases: Vec<(&str, Value, Expect)> = vec![
        ("B >= A", json!({"A": "2024-03", "B": "2024-05-02"}), Pass),
        ("B >= A", json!({"A": "2024-03", "B": "2024-02-10"}), Fail),
        (
            "B >= A",
            json!({"A": "2024-03", "B": "2024-03-15"}),
            Undecidable("A is a partial value whose span overlaps B"),
        ),
        (
            "B >= A",
            json!({"A": "2024", "B": "2024-06"}),
            Undecidable("overlaps"),
        ),
        ("B >= A", json!({"A": "2024-02", "B": "2024-03"}), Pass),
        (
            "B >= A",
            json!({"A": "2024-03-01", "B": "2024-03-01"}),
            Pass,
        ),
        (
            "A != B",
            json!({"A": "2024-03", "B": "2024-03-15"}),
            Undecidable("overlaps"),
        ),
        ("A != B", json!({"A": "2024-03", "B": "2024-04-15"}), Pass),
        (
            "A >= '2024-03-10'",
            json!({"A": "2024-03"}),
            Undecidable("holds a date or time the check compares it with"),
        ),
        ("A >= '2024-03-10'", json!({"A": "2024-04"}), Pass),
        ("A >= '2024-03-10'", json!({"A": "2024-02"}), Fail),
        (
            "A.startsWith('2024-03-0')",
            json!({"A": "2024-03"}),
            Undecidable("the answer depends on the unknown part of A"),
        ),
        ("A < '2025-01-01'", json!({"A": "2024-02"}), Pass),
        (
            "T >= S",
            json!({"S": "2024-03-15T10", "T": "2024-03-15T12:00Z"}),
            Pass,
        ),
        (
            "T >= S",
            json!({"S": "2024-03-15T10", "T": "2024-03-15T10:30Z"}),
            Undecidable("overlaps"),
        ),
        (
            "T >= S",
            json!({"S": "2024-03-15T10+02:00", "T": "2024-03-15T09:00Z"}),
            Pass,
        ),
        (
            "T >= S",
            json!({"S": "2024-03-15", "T": "2024-03-14T23:59:59Z"}),
            Fail,
        ),
        ("PT >= '09:00:00'", json!({"PT": "10"}), Pass),
        ("PT >= '10:30'", json!({"PT": "10"}), Undecidable("holds")),
        (
            "A <= B && B <= C && C <= D && D <= E",
            json!({"A": "2020", "B": "2021", "C": "2022", "D": "2023", "E": "2024"}),
            Undecidable("more than 4"),
        ),
        (
            "A <= B && B <= C && C <= D",
            json!({"A": "2020", "B": "2021", "C": "2022", "D": "2023"}),
            Pass,
        ),
    ];
    for (assert, items, expect) in cases {
        let p = partial_protocol(assert);
        let context = RecordContext {
            study: "P",
            site: "S",
            visit: "V",
            form: "F",
        };
        let what = format!("{assert} with {items}");
        let checked = validate_items(&p, context, items.as_object().unwrap().clone())
            .unwrap_or_else(|r| panic!("{what}: {}", r.reason));
        let got = checked.findings;
        match expect {
            Pass => assert!(got.is_empty(), "{what}: {got:?}"),
            Fail => assert_eq!(got.len(), 1, "{what}: {got:?}"),
            Undecidable(why) => {
                assert_eq!(got.len(), 1, "{what}: {got:?}");
                let m = &got[0].message;
                assert!(
                    m.starts_with("check X could not be decided: "),
                    "{what}: {m}"
                );
                assert!(
                    m.contains(why) && m.ends_with("please review: M"),
                    "{what}: {m}"
                );
            }
        }
    }
}
