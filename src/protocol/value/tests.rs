//! Each type's valid and invalid shapes and canonical forms; arbitrary input never panics and the
//! canonical form is stable.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::protocol::{CodeType, Item, ItemType};

fn item(kind: ItemType) -> Item {
    Item {
        kind,
        ..Item::default()
    }
}

fn code(code_type: CodeType) -> Item {
    Item {
        kind: ItemType::Code,
        code_type: Some(code_type),
        ..Item::default()
    }
}

/// (input, canonical text) for valid inputs; (input, None) for refused ones.
fn table(kind: ItemType, cases: &[(&str, Option<&str>)]) {
    let def = item(kind);
    for (input, expect) in cases {
        let got = canonical_text(&def, &json!(input)).ok();
        assert_eq!(got.as_deref(), *expect, "{kind:?} {input:?}");
    }
}

#[test]
fn times() {
    table(
        ItemType::Time,
        &[
            ("08:30", Some("08:30:00")),
            ("08:30:15", Some("08:30:15")),
            ("08:30:15.250", Some("08:30:15.25")),
            ("08:30:15.000", Some("08:30:15")),
            ("08:30+00:00", Some("08:30:00Z")),
            ("08:30Z", Some("08:30:00Z")),
            ("23:59:59.999999999-05:30", Some("23:59:59.999999999-05:30")),
            ("08", None),
            ("8:30", None),
            ("24:00", None),
            ("08:60", None),
            ("08:30:60", None),
            ("08:30:15.", None),
            ("08:30:15.1234567890", None),
            ("08:30-00:00", None),
            ("08:30+0100", None),
            ("08:30+24:00", None),
            ("08:30 ", None),
            ("０８:30", None),
            ("", None),
        ],
    );
}

#[test]
fn datetimes() {
    table(
        ItemType::Datetime,
        &[
            ("2024-02-29T10:00", Some("2024-02-29T10:00:00")),
            (
                "2024-03-01T10:00:05.10+01:00",
                Some("2024-03-01T10:00:05.1+01:00"),
            ),
            ("2024-03-01T10:00:00+00:00", Some("2024-03-01T10:00:00Z")),
            ("2023-02-29T10:00", None),
            ("2024-03-01", None),
            ("2024-03-01T10", None),
            ("2024-03-01t10:00", None),
            ("2024-03-01 10:00", None),
            ("2024-03T10:00", None),
            ("2024-03-01T10:00:00ZZ", None),
        ],
    );
}

#[test]
fn partial_dates_are_real_calendar_dates() {
    table(
        ItemType::PartialDate,
        &[
            ("2024", Some("2024")),
            ("2024-03", Some("2024-03")),
            ("2024-02-29", Some("2024-02-29")),
            ("2000-02-29", Some("2000-02-29")),
            ("1900-02-29", None),
            ("2023-02-29", None),
            ("2024-02-30", None),
            ("2024-04-31", None),
            ("2024-13", None),
            ("2024-00", None),
            ("2024-03-00", None),
            ("24", None),
            ("2024-3", None),
            ("2024-03-", None),
            ("20240301", None),
            ("2024-UN-UN", None),
            ("+2024", None),
        ],
    );
}

#[test]
fn partial_times_and_datetimes_keep_their_precision() {
    table(
        ItemType::PartialTime,
        &[
            ("10", Some("10")),
            ("10:15", Some("10:15")),
            ("10:15:30.50", Some("10:15:30.50")),
            ("10+00:00", Some("10Z")),
            ("10:", None),
            ("1", None),
        ],
    );
    table(
        ItemType::PartialDatetime,
        &[
            ("2024", Some("2024")),
            ("2024-03-15", Some("2024-03-15")),
            ("2024-03-15T10", Some("2024-03-15T10")),
            ("2024-03-15T10:15+02:00", Some("2024-03-15T10:15+02:00")),
            ("2024-03T10", None),
            ("2024T10", None),
            ("2024-03-15T", None),
            ("2024-02-30T10", None),
        ],
    );
}

#[test]
fn dates_read_as_before_and_are_written_one_way() {
    table(
        ItemType::Date,
        &[
            ("2026-11-20", Some("2026-11-20")),
            ("2026-1-5", Some("2026-01-05")),
            ("2024-02-29", Some("2024-02-29")),
            ("2023-02-29", None),
            ("2026-11", None),
            ("20-11-2026", None),
        ],
    );
    assert_eq!(
        from_json(&item(ItemType::Date), &json!(20261120)),
        Err(ValueError::DateType)
    );
}

#[test]
fn numbers_booleans_and_binary() {
    let int = item(ItemType::Integer);
    assert_eq!(from_json(&int, &json!(7)), Ok(json!(7)));
    assert_eq!(from_json(&int, &json!(7.0)), Err(ValueError::Integer));
    assert_eq!(from_json(&int, &json!("7")), Err(ValueError::Integer));
    assert_eq!(from_text(&int, "007"), Ok(json!(7)));
    let dec = item(ItemType::Decimal);
    assert_eq!(from_json(&dec, &json!(37.0)), Ok(json!(37)));
    assert_eq!(from_json(&dec, &json!(36.8)), Ok(json!(36.8)));
    assert_eq!(from_text(&dec, "36.80"), Ok(json!(36.8)));
    assert_eq!(canonical_text(&dec, &json!(1e-7)).unwrap(), "0.0000001");
    assert_eq!(from_json(&dec, &json!("36.8")), Err(ValueError::Decimal));
    let b = item(ItemType::Boolean);
    assert_eq!(from_json(&b, &json!(true)), Ok(json!(true)));
    assert_eq!(from_json(&b, &json!("true")), Err(ValueError::Boolean));
    assert_eq!(from_text(&b, "1"), Ok(json!(true)));
    assert_eq!(from_text(&b, "false"), Ok(json!(false)));
    assert_eq!(from_text(&b, "True"), Err(ValueError::Boolean));
    assert_eq!(canonical_text(&b, &json!(false)).unwrap(), "false");
    let bin = item(ItemType::Binary);
    for v in [json!("aGVsbG8="), json!(1), json!(true), json!([])] {
        assert_eq!(from_json(&bin, &v), Err(ValueError::Binary));
    }
    assert_eq!(from_text(&bin, ""), Err(ValueError::Binary));
    assert_eq!(from_json(&int, &Value::Null), Err(ValueError::Missing));
}

#[test]
fn integer_codes_have_no_leading_zeros() {
    let i = code(CodeType::Integer);
    assert_eq!(from_json(&i, &json!("01")), Ok(json!("1")));
    assert_eq!(from_json(&i, &json!(1)), Ok(json!("1")));
    assert_eq!(from_json(&i, &json!("+1")), Ok(json!("1")));
    assert_eq!(from_json(&i, &json!("1.0")), Err(ValueError::IntegerCode));
    assert_eq!(from_json(&i, &json!("A")), Err(ValueError::IntegerCode));
    let d = code(CodeType::Decimal);
    assert_eq!(from_json(&d, &json!("1.50")), Ok(json!("1.5")));
    assert_eq!(from_json(&d, &json!(2.0)), Ok(json!("2")));
    let t = code(CodeType::Text);
    assert_eq!(from_json(&t, &json!("01")), Ok(json!("01")));
    assert_eq!(from_json(&t, &json!(1)), Err(ValueError::Code));
    assert_eq!(
        canonical_code(CodeType::Integer, "007").as_deref(),
        Some("7")
    );
}

#[test]
fn canonical_values_are_not_copied() {
    assert_eq!(
        canonical(&item(ItemType::Time), &json!("08:30:00")),
        Ok(None)
    );
    assert_eq!(
        canonical(&item(ItemType::Time), &json!("08:30")),
        Ok(Some(json!("08:30:00")))
    );
    assert_eq!(canonical(&item(ItemType::Decimal), &json!(36.8)), Ok(None));
    assert_eq!(canonical(&code(CodeType::Integer), &json!("1")), Ok(None));
}

#[test]
fn stored_text_of_scalars_only() {
    assert_eq!(stored_text(&json!("psn:ab")).as_deref(), Some("psn:ab"));
    assert_eq!(
        stored_text(&json!(1e16)).as_deref(),
        Some("10000000000000000")
    );
    assert_eq!(stored_text(&json!(true)).as_deref(), Some("true"));
    assert_eq!(stored_text(&Value::Null), None);
    assert_eq!(stored_text(&json!({"1": {}})), None);
}

const ALL: [ItemType; 12] = [
    ItemType::Integer,
    ItemType::Decimal,
    ItemType::Text,
    ItemType::Date,
    ItemType::Code,
    ItemType::Boolean,
    ItemType::Time,
    ItemType::Datetime,
    ItemType::PartialDate,
    ItemType::PartialTime,
    ItemType::PartialDatetime,
    ItemType::Binary,
];

fn arb_def() -> impl Strategy<Value = Item> {
    (
        prop::sample::select(ALL.to_vec()),
        prop::sample::select(vec![CodeType::Integer, CodeType::Decimal, CodeType::Text]),
    )
        .prop_map(|(kind, ct)| Item {
            kind,
            code_type: Some(ct),
            ..Item::default()
        })
}

/// Texts near the shapes (digits, separators, offsets) and anything at all.
fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,4}(-[0-9]{1,2}(-[0-9]{1,2}(T[0-9]{2}(:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,10})?)?)?)?)?)?(Z|[+-][0-9]{2}:[0-9]{2})?",
        "[0-9]{2}(:[0-9]{2}(:[0-9]{2}(\\.[0-9]{0,10})?)?)?(Z|[+-][0-9]{2}:[0-9]{2})?",
        "[+-]?[0-9]{0,20}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{1,4})?",
        ".{0,24}",
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_text().prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        Just(json!([1])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// Whatever the input, no panic; a value accepted once is canonical: accepted again
    /// unchanged, with the same text, and its text read back gives it again.
    #[test]
    fn canonical_forms_are_stable(def in arb_def(), v in arb_json()) {
        if let Ok(c) = from_json(&def, &v) {
            prop_assert_eq!(canonical(&def, &c), Ok(None));
            let text = canonical_text(&def, &v).unwrap();
            prop_assert_eq!(stored_text(&c), Some(text.clone()));
            prop_assert_eq!(from_text(&def, &text), Ok(c.clone()));
            let _ = CelInput::of(&def, &c).span();
        }
    }

    #[test]
    fn text_never_panics_and_is_stable(def in arb_def(), t in arb_text()) {
        if let Ok(c) = from_text(&def, &t) {
            let text = stored_text(&c).unwrap();
            prop_assert_eq!(from_text(&def, &text), Ok(c.clone()));
            prop_assert_eq!(canonical(&def, &c), Ok(None));
        }
    }
}
