//! The items of a form instance against its form: where each goes, its canonical value, units,
//! binary items, undefined and misplaced items, an item given twice.

use serde_json::{Value, json};

use super::tests::{mapped, one_form, refused};
use super::*;

/// The snapshot of a Snapshot file's F.VS (or `form`) holding `body`.
fn state(form: &str, body: &str) -> Value {
    match mapped(&one_form(form, "", body)).delta {
        OdmDelta::Snapshot(items) => Value::Object(items),
        other => panic!("not a snapshot: {other:?}"),
    }
}

fn group(oid: &str, attrs: &str, items: &str) -> String {
    format!("<ItemGroupData ItemGroupOID=\"{oid}\"{attrs}>{items}</ItemGroupData>")
}

fn item(oid: &str, value: &str) -> String {
    format!("<ItemData ItemOID=\"{oid}\" Value=\"{value}\"/>")
}

/// The refusal of F.VS (or `form`) holding `body`; its reason never holds `hidden`.
fn refusal(form: &str, body: &str, hidden: &[&str]) -> Refusal {
    let r = refused(&one_form(form, "", body));
    for h in hidden {
        assert!(!r.to_string().contains(h), "{h:?} in {r}");
    }
    r
}

#[test]
fn non_repeating_groups_fold_into_the_form_and_repeating_ones_hold_rows_by_repeat_key() {
    let body = group("IG.AE", "", &item("I.AEYN", "1"))
        // Row 2 given in two ItemGroupData elements; row "1" by default.
        + &group("IG.AELOG", " ItemGroupRepeatKey=\"2\"", &item("I.AETERM", "Rash"))
        + &group("IG.AELOG", "", &item("I.AETERM", "Cough"))
        + &group("IG.AELOG", " ItemGroupRepeatKey=\"2\"", &item("I.AESTDAT", "2024"))
        + &group("IG.CMLOG", " ItemGroupRepeatKey=\"YEAR1[1]/CYCLE1[1]\"", &item("I.CMTRT", "Aspirin"));
    assert_eq!(
        state("F.AE", &body),
        json!({
            "I.AEYN": true,
            "IG.AELOG": {"1": {"I.AETERM": "Cough"}, "2": {"I.AETERM": "Rash", "I.AESTDAT": "2024"}},
            "IG.CMLOG": {"YEAR1[1]/CYCLE1[1]": {"I.CMTRT": "Aspirin"}}
        })
    );
    // Any other ItemGroupOID (a non-repeating group, an empty one, one the protocol does not
    // know) puts its items on the form.
    for oid in ["IG.VS", "", "IG.ANYTHING"] {
        assert_eq!(
            state("F.VS", &group(oid, "", &item("I.PULSE", "60"))),
            json!({"I.PULSE": 60})
        );
    }
}

#[test]
fn values_become_the_canonical_json_of_their_items_type() {
    for (oid, text, expected) in [
        ("I.PULSE", "+007", json!(7)),
        ("I.PULSE", " 64\n", json!(64)),
        ("I.WEIGHT", "36.80", json!(36.8)),
        ("I.WEIGHT", "1e2", json!(100)),
        ("I.DONE", "false", json!(false)),
        ("I.DONE", "0", json!(false)),
        ("I.VSDAT", "2024-1-5", json!("2024-01-05")),
        ("I.TIME", "08:30:00.500", json!("08:30:00.5")),
        ("I.ONSET", "2024-03-02T08", json!("2024-03-02T08")),
        ("I.POS", " 02 ", json!("2")),
        // Text and text codes keep their whitespace: it is content.
        ("I.ARM", " A", json!(" A")),
        ("I.NOTE", "  spaced  ", json!("  spaced  ")),
        ("I.NOTE", "日本語のテスト", json!("日本語のテスト")),
    ] {
        assert_eq!(
            state("F.VS", &group("IG", "", &item(oid, text))),
            json!({oid: expected}),
            "{oid} {text:?}"
        );
    }
}

#[test]
fn is_null_a_missing_value_and_an_empty_value_are_null() {
    let body = group(
        "IG",
        "",
        "<ItemData ItemOID=\"I.TEMP\" IsNull=\"Yes\"/><ItemData ItemOID=\"I.PULSE\"/>\
         <ItemData ItemOID=\"I.VSDAT\" Value=\"\"/><ItemData ItemOID=\"I.WEIGHT\" Value=\" \"/>\
         <ItemData ItemOID=\"I.NOTE\" Value=\"\"/><ItemDataString ItemOID=\"I.ARM\" IsNull=\"Yes\"/>",
    );
    assert_eq!(
        state("F.VS", &body),
        json!({"I.TEMP": null, "I.PULSE": null, "I.VSDAT": null, "I.WEIGHT": null, "I.NOTE": null, "I.ARM": null})
    );
    // Near miss: spaces are a text's content.
    assert_eq!(
        state("F.VS", &group("IG", "", &item("I.NOTE", " "))),
        json!({"I.NOTE": " "})
    );
}

#[test]
fn a_value_not_of_its_type_refuses_the_form_naming_the_item_never_the_value() {
    for (oid, text, says) in [
        ("I.PULSE", "12abc", "must be an integer"),
        ("I.PULSE", "35 Years ", "must be an integer"),
        ("I.VSDAT", "2024-02-30", "is not a YYYY-MM-DD date"),
        ("I.VSDAT", "01 JAN 1980", "is not a YYYY-MM-DD date"),
        ("I.DONE", "yes", "must be true or false"),
        ("I.POS", "one", "must be an integer code"),
        ("I.TIME", "25:00", "is not a time"),
    ] {
        let r = refusal("F.VS", &group("IG", "", &item(oid, text)), &[text.trim()]);
        assert_eq!(r.code, "bad_value");
        assert!(
            r.reason
                .starts_with(&format!("item {oid} at line 5, column ")),
            "{}",
            r.reason
        );
        assert!(
            r.reason.ends_with(says) || r.reason.contains(says),
            "{}",
            r.reason
        );
        assert!(r.record_id.is_some(), "the record is known by then");
    }
}

#[test]
fn a_stated_unit_must_be_one_the_item_accepts() {
    let with_unit = |oid: &str, value: &str, unit: &str| {
        group(
            "IG",
            "",
            &format!(
                "<ItemData ItemOID=\"{oid}\" Value=\"{value}\"><MeasurementUnitRef MeasurementUnitOID=\"{unit}\"/></ItemData>"
            ),
        )
    };
    // `units` lists the accepted ones; `unit` alone accepts itself; no unit accepts any.
    assert_eq!(
        state("F.VS", &with_unit("I.WEIGHT", "72", "MU.KG")),
        json!({"I.WEIGHT": 72})
    );
    assert_eq!(
        state("F.VS", &with_unit("I.WEIGHT", "160", "MU.LB")),
        json!({"I.WEIGHT": 160})
    );
    assert_eq!(
        state("F.VS", &with_unit("I.TEMP", "37", "MU.ANY")),
        json!({"I.TEMP": 37})
    );
    let typed = group(
        "IG",
        "",
        "<ItemDataInteger ItemOID=\"I.PULSE\" MeasurementUnitOID=\"MU.BPM\">60</ItemDataInteger>",
    );
    assert_eq!(state("F.VS", &typed), json!({"I.PULSE": 60}));
    // A unit on no value says nothing.
    let null = group(
        "IG",
        "",
        "<ItemData ItemOID=\"I.WEIGHT\" IsNull=\"Yes\"><MeasurementUnitRef MeasurementUnitOID=\"MU.STONE\"/></ItemData>",
    );
    assert_eq!(state("F.VS", &null), json!({"I.WEIGHT": null}));

    let r = refusal(
        "F.VS",
        &with_unit("I.WEIGHT", "11", "MU.STONE"),
        &["STONE", "11"],
    );
    assert_eq!(r.code, "unit_not_accepted");
    assert!(
        r.reason.contains("item I.WEIGHT at line 5")
            && r.reason.ends_with("(it accepts MU.KG, MU.LB)"),
        "{}",
        r.reason
    );
    let r = refusal("F.VS", &typed.replace("MU.BPM", "MU.HZ"), &["MU.HZ"]);
    assert!(r.reason.ends_with("(it accepts MU.BPM)"), "{}", r.reason);
    // The unit OID is compared as written: the same unit in other letters is another unit.
    assert_eq!(
        refused(&one_form("F.VS", "", &with_unit("I.WEIGHT", "72", "mu.kg"))).code,
        "unit_not_accepted"
    );
}

#[test]
fn a_binary_item_with_a_value_refuses_the_form_naming_the_item() {
    let r = refusal(
        "F.CONSENT",
        &group("IG", "", &item("I.PDF", "JVBERi0xLjQK")),
        &["JVBER"],
    );
    assert_eq!(r.code, "binary_item");
    assert!(
        r.reason.starts_with("item I.PDF at line 5, column"),
        "{}",
        r.reason
    );
    // Near miss: the item left empty has no content to refuse.
    let empty = group(
        "IG",
        "",
        &("<ItemData ItemOID=\"I.PDF\" IsNull=\"Yes\"/>".to_string()
            + &item("I.CONSDAT", "2024-01-02")),
    );
    assert_eq!(
        state("F.CONSENT", &empty),
        json!({"I.PDF": null, "I.CONSDAT": "2024-01-02"})
    );
}

#[test]
fn items_the_form_does_not_define_or_that_are_given_in_the_wrong_place_refuse_it() {
    let body = group(
        "IG",
        "",
        &(item("I.PULSE", "60") + &item("I.SECRET.NAME", "x") + &item("I.AETERM", "y")),
    );
    let r = refusal("F.VS", &body, &["SECRET"]);
    assert_eq!(r.code, "undefined_items");
    assert!(
        r.reason.starts_with(
            "2 item(s) not defined by form F.VS of study ST.MAP (the first at line 5, column "
        ),
        "{}",
        r.reason
    );
    // An item of a repeating group outside it, a form item inside one, a row item in another group.
    for (body, name, says) in [
        (
            group("IG.AE", "", &item("I.AETERM", "x")),
            "I.AETERM",
            "belongs to repeating group IG.AELOG but is not given in an ItemGroupData of that group",
        ),
        (
            group("IG.AELOG", "", &item("I.AEYN", "1")),
            "I.AEYN",
            "is one of form F.AE's own items but is given in a row of repeating group IG.AELOG",
        ),
        (
            group("IG.CMLOG", "", &item("I.AETERM", "x")),
            "I.AETERM",
            "belongs to repeating group IG.AELOG but is not given",
        ),
    ] {
        let r = refusal("F.AE", &body, &["\"x\""]);
        assert_eq!(r.code, "misplaced_item");
        assert!(
            r.reason
                .starts_with(&format!("item {name} at line 5, column ")),
            "{}",
            r.reason
        );
        assert!(r.reason.contains(says), "{}", r.reason);
    }
}

#[test]
fn the_same_item_twice_is_accepted_only_when_both_say_the_same() {
    let twice = |a: &str, b: &str| group("IG", "", &(a.to_string() + b));
    // The same canonical value (064 and 64), nulls (as DIS exports repeat them): kept once.
    assert_eq!(
        state(
            "F.VS",
            &twice(&item("I.PULSE", "064"), &item("I.PULSE", "64"))
        ),
        json!({"I.PULSE": 64})
    );
    assert_eq!(
        state(
            "F.VS",
            &twice(
                "<ItemData ItemOID=\"I.NOTE\"/>",
                "<ItemData ItemOID=\"I.NOTE\" Value=\"\"/>"
            )
        ),
        json!({"I.NOTE": null})
    );
    // On the form, across two ItemGroupData elements.
    let split =
        group("IG.1", "", &item("I.PULSE", "60")) + &group("IG.2", "", &item("I.PULSE", "61"));
    let r = refusal("F.VS", &split, &["60", "61"]);
    assert_eq!(r.code, "duplicate_item");
    assert!(
        r.reason.starts_with(
            "item I.PULSE is given twice on the form with different values (at line 5, column "
        ),
        "{}",
        r.reason
    );
    // In one row; the same value stated in another unit is another value.
    let row = |items: &str| group("IG.CMLOG", " ItemGroupRepeatKey=\"4\"", items);
    let dose = |unit: &str| {
        format!(
            "<ItemData ItemOID=\"I.CMDOSE\" Value=\"5\"><MeasurementUnitRef MeasurementUnitOID=\"{unit}\"/></ItemData>"
        )
    };
    let r = refusal("F.AE", &row(&(dose("MU.MG") + &dose("MU.G"))), &["\"4\""]);
    assert_eq!(r.code, "duplicate_item");
    assert!(
        r.reason
            .contains("item I.CMDOSE is given twice in one row of group IG.CMLOG"),
        "{}",
        r.reason
    );
    assert_eq!(
        state("F.AE", &row(&(dose("MU.MG") + &dose("MU.MG")))),
        json!({"IG.CMLOG": {"4": {"I.CMDOSE": 5}}})
    );
    // Near miss: the same item in two rows.
    let two_rows = row(&item("I.CMTRT", "A"))
        + &group(
            "IG.CMLOG",
            " ItemGroupRepeatKey=\"5\"",
            &item("I.CMTRT", "B"),
        );
    assert_eq!(
        state("F.AE", &two_rows),
        json!({"IG.CMLOG": {"4": {"I.CMTRT": "A"}, "5": {"I.CMTRT": "B"}}})
    );
}
