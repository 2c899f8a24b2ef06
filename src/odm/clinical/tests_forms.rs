//! Forms refused one by one, each beside its near miss; the rest of the file is read on.

use super::tests::{form, forms, pos_of, read_all, read_limited, subject};
use super::*;

/// The problem of the only form of `doc`.
fn problem(doc: &str) -> FormError {
    let (read, summary) = read_all(doc);
    assert_eq!(summary.refused, 1);
    match &read[..] {
        [Err(ReadError::Form(e))] => e.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn binary_items_refuse_their_form_naming_the_item_by_position_and_escaped_oid() {
    for item in [
        "<ItemDataBase64Binary ItemOID=\"I.PDF\">JVBERi0xLjQK</ItemDataBase64Binary>",
        "<ItemDataHexBinary ItemOID=\"I.PDF\">255044462D</ItemDataHexBinary>",
        "<ItemDataBase64Float ItemOID=\"I.PDF\">AAAA</ItemDataBase64Float>",
        "<ItemData ItemOID=\"I.PDF\" DataType=\"base64Binary\" Value=\"JVBERi0xLjQK\"/>",
    ] {
        let doc = form(&format!("<ItemData ItemOID=\"I.OK\" Value=\"1\"/>{item}"));
        let e = problem(&doc);
        let at = pos_of(&doc, "\"I.PDF\"");
        assert_eq!(
            e.problem,
            FormProblem::BinaryItem {
                item_oid: "I.PDF".into(),
                at
            }
        );
        let shown = e.to_string();
        assert!(
            shown.contains("\"I.PDF\"") && shown.contains(&at.to_string()),
            "{shown}"
        );
        assert!(
            !shown.contains("JVBER") && !shown.contains("2550"),
            "{shown}"
        );
    }
    // Near misses: a text item holding base64-looking text; an ItemData of another DataType.
    for item in [
        "<ItemDataString ItemOID=\"I.PDF\">JVBERi0xLjQK</ItemDataString>",
        "<ItemData ItemOID=\"I.PDF\" DataType=\"text\" Value=\"JVBERi0xLjQK\"/>",
    ] {
        assert_eq!(forms(&form(item))[0].items.len(), 1);
    }
}

#[test]
fn an_oid_from_the_file_is_escaped_and_cut_in_a_reason() {
    // What XML lets a name hold that a terminal or a log must not get raw: a newline, a C1
    // control, a bidirectional override; and length.
    let hostile = format!("I.X&#10;&#x9B;2J\u{202e}{}", "y".repeat(500));
    let doc = form(&format!(
        "<ItemDataHexBinary ItemOID=\"{hostile}\">00</ItemDataHexBinary>"
    ));
    let shown = problem(&doc).to_string();
    assert!(!shown.contains(['\n', '\u{9b}', '\u{202e}']), "{shown}");
    assert!(
        shown.contains("I.X\\u{a}\\u{9b}2J\\u{202e}yyy") && shown.contains("..."),
        "{shown}"
    );
    assert!(shown.len() < 400, "{}", shown.len());
}

#[test]
fn a_refused_form_does_not_stop_the_next_one() {
    let bad = "<FormData FormOID=\"F.BAD\"><ItemGroupData ItemGroupOID=\"G\"><ItemDataHexBinary ItemOID=\"I\">00</ItemDataHexBinary></ItemGroupData></FormData>";
    let good = "<FormData FormOID=\"F.GOOD\"><ItemGroupData ItemGroupOID=\"G\"><ItemData ItemOID=\"I\" Value=\"1\"/></ItemGroupData></FormData>";
    let (read, summary) = read_all(&subject(&format!("{bad}{good}")));
    assert!(matches!(&read[0], Err(ReadError::Form(e)) if e.form_oid.as_deref() == Some("F.BAD")));
    assert!(matches!(&read[1], Ok(f) if f.form_oid == "F.GOOD"));
    assert_eq!((summary.forms, summary.refused), (1, 1));
}

#[test]
fn missing_oids_and_keys_refuse_the_forms_they_concern() {
    let cases = [
        (
            form("").replace("FormOID=\"F\"", "FormOID=\"\""),
            "FormData",
            "FormOID",
        ),
        (
            form("").replace("SubjectKey=\"K\"", ""),
            "SubjectData",
            "SubjectKey",
        ),
        (
            form("").replace("StudyEventOID=\"E\"", "StudyEventOID=\"\""),
            "StudyEventData",
            "StudyEventOID",
        ),
        (
            form("").replace("StudyOID=\"S\"", ""),
            "ClinicalData",
            "StudyOID",
        ),
        (form("<ItemData Value=\"1\"/>"), "ItemData", "ItemOID"),
        (
            form("<ItemDataInteger ItemOID=\"\">1</ItemDataInteger>"),
            "ItemData",
            "ItemOID",
        ),
    ];
    for (doc, element, attribute) in cases {
        let e = problem(&doc);
        assert!(
            matches!(e.problem, FormProblem::MissingAttribute { element: el, attribute: at, .. } if el == element && at == attribute),
            "{element}/{attribute}: {e}"
        );
    }
}

#[test]
fn transaction_types_odm_does_not_define_refuse_the_form() {
    for (doc, element) in [
        (
            form("").replace(
                "SubjectKey=\"K\"",
                "SubjectKey=\"K\" TransactionType=\"Delete\"",
            ),
            "SubjectData",
        ),
        (
            form("").replace(
                "StudyEventOID=\"E\"",
                "StudyEventOID=\"E\" TransactionType=\"insert\"",
            ),
            "StudyEventData",
        ),
        (
            form("").replace("FormOID=\"F\"", "FormOID=\"F\" TransactionType=\"X\""),
            "FormData",
        ),
        (
            form("").replace(
                "ItemGroupOID=\"G\"",
                "ItemGroupOID=\"G\" TransactionType=\"X\"",
            ),
            "ItemGroupData",
        ),
        (
            form("<ItemData ItemOID=\"I\" TransactionType=\"Replace\"/>"),
            "ItemData",
        ),
    ] {
        let e = problem(&doc);
        assert!(
            matches!(e.problem, FormProblem::BadTransactionType { element: el, .. } if el == element),
            "{element}: {e}"
        );
    }
    // Near miss: each of the five, at every level.
    for tx in ["Insert", "Update", "Remove", "Upsert", "Context"] {
        let doc = form(&format!(
            "<ItemData ItemOID=\"I\" TransactionType=\"{tx}\"/>"
        ))
        .replace(
            "FormOID=\"F\"",
            &format!("FormOID=\"F\" TransactionType=\"{tx}\""),
        )
        .replace(
            "SubjectKey=\"K\"",
            &format!("SubjectKey=\"K\" TransactionType=\"{tx}\""),
        );
        let got = forms(&doc);
        let tx = TransactionType::parse(tx);
        assert_eq!(
            (got[0].subject_tx, got[0].tx, got[0].items[0].tx),
            (tx, tx, tx)
        );
    }
}

#[test]
fn null_values_must_be_null() {
    let at = |doc: &str| pos_of(doc, "ItemOID=\"I\"");
    let doc = form("<ItemData ItemOID=\"I\" IsNull=\"yes\"/>");
    assert_eq!(
        problem(&doc).problem,
        FormProblem::BadIsNull { at: at(&doc) }
    );
    for item in [
        "<ItemData ItemOID=\"I\" IsNull=\"Yes\" Value=\"3\"/>",
        "<ItemDataInteger ItemOID=\"I\" IsNull=\"Yes\">3</ItemDataInteger>",
        "<ItemData ItemOID=\"I\" IsNull=\"Yes\"><Value>3</Value></ItemData>",
    ] {
        let doc = form(item);
        assert_eq!(
            problem(&doc).problem,
            FormProblem::NullWithValue { at: at(&doc) },
            "{item}"
        );
    }
    // Near misses: null without value (an empty Value too), typed or not; IsNull="No".
    for item in [
        "<ItemData ItemOID=\"I\" IsNull=\"Yes\"/>",
        "<ItemData ItemOID=\"I\" IsNull=\"Yes\" Value=\"\"/>",
        "<ItemDataInteger ItemOID=\"I\" IsNull=\"Yes\"></ItemDataInteger>",
    ] {
        let got = forms(&form(item));
        assert_eq!(
            (got[0].items[0].is_null, got[0].items[0].value.as_ref()),
            (true, None)
        );
    }
    let got = forms(&form("<ItemData ItemOID=\"I\" IsNull=\"No\" Value=\"3\"/>"));
    assert_eq!(got[0].items[0].value.as_deref(), Some("3"));
}

#[test]
fn one_value_per_item_one_group_level_and_items_inside_groups() {
    let doc = form("<ItemData ItemOID=\"I\" Value=\"1\"><Value>2</Value></ItemData>");
    assert!(matches!(
        problem(&doc).problem,
        FormProblem::SeveralValues { .. }
    ));
    let doc = form("<ItemData ItemOID=\"I\"><Value>1</Value><Value>2</Value></ItemData>");
    assert!(matches!(
        problem(&doc).problem,
        FormProblem::SeveralValues { .. }
    ));
    let doc = form("<ItemGroupData ItemGroupOID=\"G2\"/>");
    assert_eq!(
        problem(&doc).problem,
        FormProblem::NestedGroup {
            at: pos_of(&doc, "\"G2\"")
        }
    );
    let doc = subject("<FormData FormOID=\"F\"><ItemData ItemOID=\"I\" Value=\"1\"/></FormData>");
    assert_eq!(
        problem(&doc).problem,
        FormProblem::ItemOutsideGroup {
            at: pos_of(&doc, "\"I\"")
        }
    );
    // Near miss: the 2.0-style single <Value> child.
    let got = forms(&form("<ItemData ItemOID=\"I\"><Value>1</Value></ItemData>"));
    assert_eq!(got[0].items[0].value.as_deref(), Some("1"));
}

#[test]
fn a_form_may_hold_as_many_items_as_the_cap_and_no_more() {
    let limits = Limits {
        max_form_items: 5,
        ..Limits::default()
    };
    let items = |n: usize| form(&"<ItemData ItemOID=\"I\" Value=\"1\"/>".repeat(n));
    let (read, _) = read_limited(&items(5), limits);
    assert_eq!(read[0].as_ref().unwrap().items.len(), 5);
    let (read, _) = read_limited(&items(6), limits);
    assert!(
        matches!(&read[..], [Err(ReadError::Form(e))] if e.problem == FormProblem::TooManyItems { cap: 5 })
    );
}

#[test]
fn reasons_name_the_form_and_never_its_values() {
    let doc = form("<ItemData ItemOID=\"I\" IsNull=\"Yes\" Value=\"Jane Roe\"/>")
        .replace("SubjectKey=\"K\"", "SubjectKey=\"Jane Roe 1970\"");
    let e = problem(&doc);
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("Jane"), "{shown}");
    assert!(
        shown.contains("FormOID \"F\"") && shown.contains(&pos_of(&doc, "FormOID").to_string()),
        "{shown}"
    );
}

#[test]
fn a_form_may_hold_as_many_bytes_as_the_cap_and_no_more() {
    let limits = Limits {
        max_form_bytes: 10_000,
        ..Limits::default()
    };
    let value = "v".repeat(1000);
    let items = |n: usize| form(&format!("<ItemData ItemOID=\"I\" Value=\"{value}\"/>").repeat(n));
    // Each item holds its 1000-byte value and about 200 bytes besides.
    let (read, _) = read_limited(&items(7), limits);
    assert_eq!(read[0].as_ref().unwrap().items.len(), 7);
    let (read, _) = read_limited(&items(9), limits);
    assert!(
        matches!(&read[..], [Err(ReadError::Form(e))] if e.problem == FormProblem::TooLarge { cap: 10_000 }),
        "{read:?}"
    );
}
