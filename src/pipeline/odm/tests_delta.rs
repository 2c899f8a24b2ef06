//! Transactions: how TransactionType is inherited and what each makes of the form, and `apply`
//! on a table of stored states and deltas.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::tests::{in_file, mapped, refused};
use super::*;
use crate::odm::model::TransactionType as Tx;

fn row(key: &str, tx: &str, items: &str) -> String {
    let tx = if tx.is_empty() {
        String::new()
    } else {
        format!(" TransactionType=\"{tx}\"")
    };
    format!(
        "<ItemGroupData ItemGroupOID=\"IG.AELOG\" ItemGroupRepeatKey=\"{key}\"{tx}>{items}</ItemGroupData>"
    )
}

fn term(value: &str, tx: &str) -> String {
    let tx = if tx.is_empty() {
        String::new()
    } else {
        format!(" TransactionType=\"{tx}\"")
    };
    format!("<ItemData ItemOID=\"I.AETERM\" Value=\"{value}\"{tx}/>")
}

const YES: &str = "<ItemGroupData ItemGroupOID=\"IG.AE\"><ItemData ItemOID=\"I.AEYN\" Value=\"1\"/></ItemGroupData>";

fn delta_of(file_type: &str, form_attrs: &str, body: &str) -> OdmDelta {
    mapped(&in_file(file_type, "F.AE", form_attrs, body)).delta
}

fn set(v: Value) -> ItemChange {
    ItemChange::Set(v)
}

fn merge(items: &[(&str, ItemChange)], rows: &[(&str, RowChange)]) -> OdmDelta {
    let mut m = Merge {
        items: items
            .iter()
            .map(|(k, c)| (k.to_string(), c.clone()))
            .collect(),
        groups: BTreeMap::new(),
    };
    for (key, change) in rows {
        m.groups
            .entry("IG.AELOG".to_string())
            .or_default()
            .insert(key.to_string(), change.clone());
    }
    OdmDelta::Merge(m)
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

#[test]
fn the_transaction_in_force_at_the_form_decides_what_it_does() {
    let body = YES.to_string() + &row("1", "", &term("Rash", ""));
    let state = object(json!({"I.AEYN": true, "IG.AELOG": {"1": {"I.AETERM": "Rash"}}}));
    // No TransactionType: a snapshot, unless the file is Transactional.
    assert_eq!(
        delta_of("Snapshot", "", &body),
        OdmDelta::Snapshot(state.clone())
    );
    assert_eq!(delta_of("", "", &body), OdmDelta::Snapshot(state.clone()));
    let changes = merge(
        &[("I.AEYN", set(json!(true)))],
        &[(
            "1",
            RowChange::Change([("I.AETERM".to_string(), set(json!("Rash")))].into()),
        )],
    );
    assert_eq!(delta_of("Transactional", "", &body), changes);
    for (tx, expected) in [
        ("Insert", OdmDelta::Snapshot(state.clone())),
        ("Update", changes.clone()),
        ("Upsert", changes.clone()),
        ("Remove", OdmDelta::Remove),
    ] {
        let attrs = format!(" TransactionType=\"{tx}\"");
        assert_eq!(delta_of("Snapshot", &attrs, &body), expected, "{tx}");
        // Inherited from the subject and from the event.
        for (from, to) in [
            (
                "<SubjectData SubjectKey=\"S-1\"",
                format!("<SubjectData SubjectKey=\"S-1\"{attrs}"),
            ),
            (
                "<StudyEventData StudyEventOID=\"SE.VISIT 1\"",
                format!("<StudyEventData StudyEventOID=\"SE.VISIT 1\"{attrs}"),
            ),
        ] {
            let doc = in_file("Snapshot", "F.AE", "", &body).replace(from, &to);
            let f = mapped(&doc);
            assert_eq!(
                (f.delta, f.transaction),
                (expected.clone(), Tx::parse(tx)),
                "{tx} from {from}"
            );
        }
    }
    // The form's own beats its parents': a subject Insert does not undo a form Remove.
    let doc = in_file("Snapshot", "F.AE", " TransactionType=\"Remove\"", &body).replace(
        "SubjectKey=\"S-1\"",
        "SubjectKey=\"S-1\" TransactionType=\"Insert\"",
    );
    assert_eq!(mapped(&doc).delta, OdmDelta::Remove);
    // A removed form's items are not even read.
    let junk = "<ItemGroupData ItemGroupOID=\"IG\"><ItemData ItemOID=\"I.NOPE\" Value=\"x\"/></ItemGroupData>";
    assert_eq!(
        delta_of("Snapshot", " TransactionType=\"Remove\"", junk),
        OdmDelta::Remove
    );
}

#[test]
fn below_the_form_each_element_changes_what_it_names() {
    let upsert = " TransactionType=\"Upsert\"";
    // An item removed, a row removed (its items unread), a row replaced, a row changed, Context left as stored.
    let body = "<ItemGroupData ItemGroupOID=\"IG.AE\"><ItemData ItemOID=\"I.AEYN\" TransactionType=\"Remove\"/></ItemGroupData>".to_string()
        + &row(
            "1",
            "Remove",
            "<ItemData ItemOID=\"I.AESTDAT\" Value=\"not a date\" TransactionType=\"Update\"/>",
        )
        + &row("2", "Insert", &(term("Rash", "") + &term("Unseen", "Remove").replace("I.AETERM", "I.AESTDAT")))
        + &row("3", "", &(term("Cough", "") + "<ItemData ItemOID=\"I.AESEV\" TransactionType=\"Remove\"/>"))
        + &row("4", "Context", &term("Same", ""))
        + &row("5", "Update", &term("Same", "Context"));
    assert_eq!(
        delta_of("Snapshot", upsert, &body),
        merge(
            &[("I.AEYN", ItemChange::Remove)],
            &[
                ("1", RowChange::Remove),
                ("2", RowChange::Replace(object(json!({"I.AETERM": "Rash"})))),
                (
                    "3",
                    RowChange::Change(
                        [
                            ("I.AESEV".to_string(), ItemChange::Remove),
                            ("I.AETERM".to_string(), set(json!("Cough")))
                        ]
                        .into()
                    )
                ),
            ]
        )
    );
    // A non-repeating group removed takes its items out.
    let gone = "<ItemGroupData ItemGroupOID=\"IG.AE\" TransactionType=\"Remove\"><ItemData ItemOID=\"I.AEYN\" Value=\"1\"/></ItemGroupData>";
    assert_eq!(
        delta_of("Snapshot", upsert, gone),
        merge(&[("I.AEYN", ItemChange::Remove)], &[])
    );
    // The group's removal wins over what an item inside says, as a row's does.
    let gone = gone.replace("Value=\"1\"", "Value=\"1\" TransactionType=\"Update\"");
    assert_eq!(
        delta_of("Snapshot", upsert, &gone),
        merge(&[("I.AEYN", ItemChange::Remove)], &[])
    );
    // In a snapshot, what is removed is simply not part of the state; a row left empty is no row.
    let body = YES.to_string()
        + &row("1", "Remove", &term("Rash", ""))
        + &row("2", "", &term("Cough", "Remove"))
        + &row("3", "", &term("Itch", ""));
    assert_eq!(
        delta_of("Snapshot", "", &body),
        OdmDelta::Snapshot(object(
            json!({"I.AEYN": true, "IG.AELOG": {"3": {"I.AETERM": "Itch"}}})
        ))
    );
}

#[test]
fn context_changes_nothing_unless_an_element_below_says_otherwise() {
    let context = " TransactionType=\"Context\"";
    assert_eq!(
        delta_of(
            "Transactional",
            context,
            &(YES.to_string() + &row("1", "", &term("Rash", "")))
        ),
        OdmDelta::Context
    );
    let body = YES.to_string() + &row("1", "", &term("Rash", "Update"));
    assert_eq!(
        delta_of("Transactional", context, &body),
        merge(
            &[],
            &[(
                "1",
                RowChange::Change([("I.AETERM".to_string(), set(json!("Rash")))].into())
            )]
        )
    );
    // A Context form that holds nothing at all is Context too.
    assert_eq!(delta_of("Transactional", context, ""), OdmDelta::Context);
    // Near miss: an Update that happens to hold nothing is a merge of nothing.
    assert_eq!(
        delta_of("Transactional", " TransactionType=\"Update\"", ""),
        merge(&[], &[])
    );
}

#[test]
fn a_row_given_twice_must_be_given_with_the_same_kind_of_change() {
    // (A removed row needs an item inside: the reader does not keep an empty ItemGroupData.)
    let body = row("2", "Remove", &term("x", "")) + &row("2", "Update", &term("Rash", ""));
    let r = refused(&in_file("Transactional", "F.AE", "", &body));
    assert_eq!(r.code, "conflicting_row");
    assert!(
        r.reason
            .starts_with("a row of group IG.AELOG is given at line 5, column "),
        "{}",
        r.reason
    );
    // Near miss: two Updates of one row are one change.
    let ok = row("2", "Update", &term("Rash", ""))
        + &row("2", "Update", "<ItemData ItemOID=\"I.AESEV\" Value=\"1\"/>");
    assert_eq!(
        delta_of("Transactional", "", &ok),
        merge(
            &[],
            &[(
                "2",
                RowChange::Change(
                    [
                        ("I.AESEV".to_string(), set(json!("1"))),
                        ("I.AETERM".to_string(), set(json!("Rash")))
                    ]
                    .into()
                )
            )]
        )
    );
}

#[test]
fn apply_a_table_of_deltas_to_stored_states() {
    let stored = json!({
        "I.AEYN": true,
        "IG.AELOG": {"1": {"I.AETERM": "psn:0a1b", "I.AESTDAT": "2024-03"}, "2": {"I.AETERM": "psn:2c3d"}}
    });
    let change = |items: &[(&str, ItemChange)]| {
        RowChange::Change(
            items
                .iter()
                .map(|(k, c)| (k.to_string(), c.clone()))
                .collect(),
        )
    };
    let cases: Vec<(&str, Value, OdmDelta, Value)> = vec![
        (
            "update one item",
            stored.clone(),
            merge(&[("I.AEYN", set(json!(false)))], &[]),
            json!({"I.AEYN": false, "IG.AELOG": stored["IG.AELOG"]}),
        ),
        (
            "add a row",
            stored.clone(),
            merge(&[], &[("3", change(&[("I.AETERM", set(json!("Rash")))]))]),
            json!({"I.AEYN": true, "IG.AELOG": {"1": stored["IG.AELOG"]["1"], "2": stored["IG.AELOG"]["2"], "3": {"I.AETERM": "Rash"}}}),
        ),
        (
            "update one item of a row (the pseudonym beside it stays)",
            stored.clone(),
            merge(
                &[],
                &[("1", change(&[("I.AESTDAT", set(json!("2024-03-02")))]))],
            ),
            json!({"I.AEYN": true, "IG.AELOG": {"1": {"I.AETERM": "psn:0a1b", "I.AESTDAT": "2024-03-02"}, "2": stored["IG.AELOG"]["2"]}}),
        ),
        (
            "remove an item",
            stored.clone(),
            merge(&[("I.AEYN", ItemChange::Remove)], &[]),
            json!({"IG.AELOG": stored["IG.AELOG"]}),
        ),
        (
            "set an item to null",
            stored.clone(),
            merge(&[("I.AEYN", set(Value::Null))], &[]),
            json!({"I.AEYN": null, "IG.AELOG": stored["IG.AELOG"]}),
        ),
        (
            "remove a row",
            stored.clone(),
            merge(&[], &[("2", RowChange::Remove)]),
            json!({"I.AEYN": true, "IG.AELOG": {"1": stored["IG.AELOG"]["1"]}}),
        ),
        (
            "replace a row",
            stored.clone(),
            merge(
                &[],
                &[("1", RowChange::Replace(object(json!({"I.AESEV": "1"}))))],
            ),
            json!({"I.AEYN": true, "IG.AELOG": {"1": {"I.AESEV": "1"}, "2": stored["IG.AELOG"]["2"]}}),
        ),
        (
            "remove a row's last item: the row goes",
            stored.clone(),
            merge(&[], &[("2", change(&[("I.AETERM", ItemChange::Remove)]))]),
            json!({"I.AEYN": true, "IG.AELOG": {"1": stored["IG.AELOG"]["1"]}}),
        ),
        (
            "remove the last rows: the group goes",
            stored.clone(),
            merge(&[], &[("1", RowChange::Remove), ("2", RowChange::Remove)]),
            json!({"I.AEYN": true}),
        ),
        (
            "remove what is not stored",
            stored.clone(),
            merge(
                &[("I.OTHER", ItemChange::Remove)],
                &[
                    ("9", RowChange::Remove),
                    ("8", change(&[("I.AETERM", ItemChange::Remove)])),
                ],
            ),
            stored.clone(),
        ),
        (
            "upsert into an empty state",
            Value::Null,
            merge(
                &[("I.AEYN", set(json!(true)))],
                &[("1", change(&[("I.AETERM", set(json!("Rash")))]))],
            ),
            json!({"I.AEYN": true, "IG.AELOG": {"1": {"I.AETERM": "Rash"}}}),
        ),
        (
            "a stored group that is no object counts as no rows",
            json!({"IG.AELOG": null}),
            merge(&[], &[("1", change(&[("I.AETERM", set(json!("Rash")))]))]),
            json!({"IG.AELOG": {"1": {"I.AETERM": "Rash"}}}),
        ),
        (
            "snapshot",
            stored.clone(),
            OdmDelta::Snapshot(object(json!({"I.AEYN": false}))),
            json!({"I.AEYN": false}),
        ),
        (
            "remove the form",
            stored.clone(),
            OdmDelta::Remove,
            json!({}),
        ),
        ("context", stored.clone(), OdmDelta::Context, stored.clone()),
    ];
    for (name, before, delta, after) in cases {
        let once = apply(&before, &delta);
        assert_eq!(once, after, "{name}");
        assert_eq!(apply(&once, &delta), once, "{name}: applied twice");
    }
}
