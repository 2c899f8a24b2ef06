//! The protocol model's new parts as `check-config` sees them: groups and their namespace, CEL
//! names, checks' new fields, the `odm:` section, and the shipped example studies.

use std::path::Path;

use super::file::ProtocolFile;
use super::*;

const GROUPED: &str = r#"
study: T-2
version: "1"
sites: [S1]
visits: [V1]
odm: {subject_key: pseudonymise, default_site: S1}
forms:
  F.AE:
    items:
      I.AEYN: {type: boolean, required: true}
    groups:
      IG.AELOG:
        label: Adverse events
        items:
          I.AETERM:  {type: text, max_length: 200, phi: true, question: "What happened?"}
          I.AESTDAT: {type: partial_date, required: true}
          I.AEENDAT: {type: partial_date}
          I.AESEV:   {type: code, code_type: integer, codes: {"01": Mild, "02": Severe}}
        checks:
          - {id: AE01, assert: "I_AEENDAT >= I_AESTDAT", message: "End before start", hard: true, when_missing: query}
alerts:
  - {id: SEVERE, when: "I_AESEV == '2'"}
"#;

fn problems(yaml: &str) -> Vec<String> {
    match Protocol::parse(yaml) {
        Ok(_) => Vec::new(),
        Err(p) => p,
    }
}

#[test]
fn groups_items_and_checks_compile() {
    let p = Protocol::parse(GROUPED).unwrap();
    assert_eq!(p.odm.subject_key, SubjectKey::Pseudonymise);
    let form = &p.forms["F.AE"];
    let log = &form.groups["IG.AELOG"];
    assert_eq!(log.label.as_deref(), Some("Adverse events"));
    let check = &log.checks[0];
    assert_eq!(check.items, vec!["I.AEENDAT", "I.AESTDAT"]);
    assert!(check.hard);
    assert_eq!(check.when_missing, WhenMissing::Query);
    assert_eq!(
        log.items["I.AESEV"].codes,
        Some(Codes::labelled([("1", "Mild"), ("2", "Severe")]))
    );
    assert_eq!(p.alerts[0].reads, vec!["I_AESEV"]);
    assert_eq!(
        form.cel_mapping(),
        vec![
            (None, "I.AEYN", "I_AEYN"),
            (Some("IG.AELOG"), "I.AEENDAT", "I_AEENDAT"),
            (Some("IG.AELOG"), "I.AESEV", "I_AESEV"),
            (Some("IG.AELOG"), "I.AESTDAT", "I_AESTDAT"),
            (Some("IG.AELOG"), "I.AETERM", "I_AETERM"),
        ]
    );
    assert_eq!(form.item("I.AESEV").map(|(g, _)| g), Some(Some("IG.AELOG")));
}

#[test]
fn names_share_one_namespace_and_cel_names_must_not_clash() {
    let bad = GROUPED
        .replace(
            "I.AEYN: {type: boolean, required: true}",
            "I.AEYN: {type: boolean}\n      I_AEYN: {type: boolean}\n      IG.AELOG: {type: text}\n      site: {type: text}\n      I.AETERM: {type: text}",
        );
    let p = problems(&bad);
    for needle in [
        "items I.AEYN and I_AEYN have the same CEL name I_AEYN",
        "IG.AELOG is declared twice (item, then group)",
        "I.AETERM is declared twice (item, then item)",
        "item site would be read in CEL as the context variable site",
    ] {
        assert!(p.iter().any(|x| x.contains(needle)), "{needle}: {p:#?}");
    }
}

#[test]
fn a_form_check_cannot_read_a_group_item_and_a_name_with_dots_gets_a_hint() {
    let bad = GROUPED.replace(
        "alerts:",
        "    checks:\n      - {id: F1, assert: \"I_AESTDAT != ''\", message: m}\n      - {id: F2, assert: \"I.AEYN\", message: m}\nalerts:",
    );
    let p = problems(&bad);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].contains("reads `I_AESTDAT`, an item of group IG.AELOG: only that group's checks"),
        "{p:#?}"
    );
    assert!(p[1].contains("check-config --cel-names FORM"), "{p:#?}");
}

#[test]
fn every_misuse_of_a_file_is_reported_at_once() {
    let bad = GROUPED
        .replace("default_site: S1", "default_site: S9, default_visit: V9")
        .replace(
            "I.AESTDAT: {type: partial_date, required: true}",
            "I.AESTDAT: {type: partial_date, range: [1, 2]}",
        )
        .replace("max_length: 200", "max_length: 200, fraction_digits: 2")
        .replace("\"02\": Severe", "\"02\": Severe, \"2\": Again, X: Bad")
        .replace("id: AE01", "id: AE01, whn_missing: skip");
    let p = problems(&bad);
    // An unknown key stops the YAML reading first: the rest is reported once it is fixed.
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].contains("whn_missing"), "{p:#?}");
    let p = problems(&bad.replace(", whn_missing: skip", ""));
    assert_eq!(p.len(), 6, "{p:#?}");
    for needle in [
        "odm.default_site S9 is not one of sites",
        "odm.default_visit V9 is not one of visits",
        "group IG.AELOG, item I.AESTDAT: range is only for integer and decimal items",
        "item I.AETERM: fraction_digits is only for decimal items",
        "item I.AESEV: codes X are not integer codes",
        "item I.AESEV: codes 2 are listed twice",
    ] {
        assert!(p.iter().any(|x| x.contains(needle)), "{needle}: {p:#?}");
    }
}

#[test]
fn a_protocol_file_is_written_back_as_it_reads() {
    let file: ProtocolFile = serde_saphyr::from_str(GROUPED).unwrap();
    let text = serde_saphyr::to_string(&file).unwrap();
    let again: ProtocolFile = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(again, file, "{text}");
    assert!(Protocol::from_file(again).is_ok());
}

#[test]
fn the_shipped_example_studies_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/studies");
    let registry = Registry::load(&dir).unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let demo = registry.protocol_for("DEMO-001", day).unwrap();
    assert!(
        demo.forms.contains_key("VS")
            && demo.forms.contains_key("AE")
            && demo.forms.contains_key("LB")
    );
    let demo2 = registry.protocol_for("DEMO-002", day).unwrap();
    let ae = &demo2.forms["F.AE"];
    assert!(ae.groups.contains_key("IG.AELOG"));
    assert_eq!(ae.cel_name("I.AESTDAT"), Some("I_AESTDAT"));
    assert!(demo2.forms["F.CM"].groups["IG.CMLOG"].items["I.CMDOSE"].accepts_unit("g"));
    assert!(!demo2.forms["F.CM"].groups["IG.CMLOG"].items["I.CMDOSE"].accepts_unit("kg"));
    assert!(demo2.forms["F.EX"].checks.iter().any(|c| c.hard));
}
