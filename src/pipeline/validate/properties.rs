//! Property tests of repeating groups (DEMO-002): whatever an uploader sends as a group's rows,
//! validation never panics, a `phi` item of a row never survives de-identification, and an accepted
//! record's items are canonical (validating them again changes nothing).

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{RecordContext, validate_items};
use crate::pipeline::{Pseudonymizer, prepare};
use crate::protocol::Registry;

fn registry() -> &'static Registry {
    static R: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        Registry::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/studies"))
            .unwrap()
    })
}

/// Marks the phi text: no pseudonym (hex) and no other generated text holds it.
const MARK: &str = "ZQX";

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "(19|20)[0-9]{2}(-[01][0-9](-[0-3][0-9])?)?".prop_map(Value::String),
        "[0-2][0-9]:[0-5][0-9](:[0-5][0-9])?(Z|[+-]0[0-9]:00)?".prop_map(Value::String),
        ".{0,8}".prop_map(Value::String),
        Just(json!([1, {"a": 2}])),
    ]
}

fn arb_row() -> impl Strategy<Value = Value> {
    let names = prop::sample::select(vec![
        "I.AESTDAT",
        "I.AEENDAT",
        "I.AESER",
        "I.AESEV",
        "I.OTHER",
    ]);
    (
        prop::collection::vec((names, arb_value()), 0..5),
        prop::option::of(".{0,12}"),
    )
        .prop_map(|(fields, term)| {
            let mut row: Map<String, Value> = fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            if let Some(t) = term {
                row.insert("I.AETERM".into(), json!(format!("{MARK}{t}")));
            }
            Value::Object(row)
        })
}

fn arb_group() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::vec(arb_row(), 0..4).prop_map(Value::Array),
        prop::collection::btree_map("[0-9a-z]{0,3}", arb_row(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        arb_value(),
    ]
}

fn record(group: Value, yn: Value) -> Value {
    json!({"schema": "edc.crf.v1", "record_id": "8a0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d",
        "version": 1, "study": "DEMO-002", "site": "SITE-01", "subject": "S-1",
        "visit": "SE.BASELINE", "form": "F.AE", "captured_at": "2026-11-20T10:15:00Z",
        "entered_by": "crc-17", "items": {"I.AEYN": yn, "IG.AELOG": group}})
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn rows_never_panic_nor_leak_and_are_stored_canonical(group in arb_group(), yn in arb_value()) {
        let body = serde_json::to_vec(&record(group, yn)).unwrap();
        let out = prepare(&body, 1 << 16, registry(), &Pseudonymizer::insecure_dev());
        let shown = match &out {
            Ok(record) => format!("{record:?}"),
            Err(rejected) => format!("{rejected:?}"),
        };
        prop_assert!(!shown.contains(MARK), "a phi value leaked: {shown}");
        // Validating the canonical items again accepts them unchanged.
        let Ok(e) = crate::pipeline::parse::parse(&body, 1 << 16) else {
            return Ok(());
        };
        let protocol = registry().studies().find(|p| p.study == "DEMO-002").unwrap();
        let context = RecordContext { study: "DEMO-002", site: "SITE-01", visit: "SE.BASELINE", form: "F.AE" };
        if let Ok(first) = validate_items(protocol, context, e.items) {
            let again = validate_items(protocol, context, first.items.clone()).unwrap();
            prop_assert_eq!(again.items, first.items);
            prop_assert_eq!(again.findings, first.findings);
        }
    }
}
