//! Property tests of the pure pipeline (parse -> validate -> de-identify): whatever the input, it
//! never panics, and no identifier value (nor a `phi` item value) survives into its output.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Pseudonymizer, prepare};
use crate::protocol::Registry;

fn registry() -> &'static Registry {
    static R: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        Registry::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/studies"))
            .unwrap()
    })
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A marker no pseudonym (hex) and no other generated field can contain.
const MARK: &str = "ZQX";

/// Records close to valid, with marked identifiers and phi text, and some fields replaced by
/// arbitrary JSON, so that every stage is reached.
fn arb_record() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(".{0,16}", 7),
        ".{0,30}",
        prop::option::of(("[a-z_]{1,12}", arb_json())),
        prop::option::of(("[A-Z]{2,6}", arb_json())),
        prop::sample::select(vec!["VS", "AE", "LB"]),
    )
        .prop_map(|(ids, term, envelope_noise, item_noise, form)| {
            let id = |i: usize| format!("{MARK}{}", ids[i]);
            let items = match form {
                "AE" => json!({"AETERM": format!("{MARK}{term}"), "AESER": "Y", "AESTDAT": "2026-11-01"}),
                "LB" => json!({"HGB": 13.5, "LBDAT": "2026-11-01", "LBCOM": format!("{MARK}{term}")}),
                _ => json!({"SYSBP": 128, "DIABP": 82, "VSDAT": "2026-11-20"}),
            };
            let mut v = json!({"schema": "edc.crf.v1", "record_id": "8a0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d",
                "version": 1, "study": "DEMO-001", "site": "SITE-03", "subject": "DEMO-001-03-0042",
                "visit": "WEEK4", "form": form, "captured_at": "2026-11-20T10:15:00Z", "entered_by": "crc-17",
                "identifiers": {"full_name": id(0), "birth_date": "1961-03-02", "phone": id(2),
                    "national_id": id(3), "mrn": id(4), "address": id(5), "email": id(6)},
                "items": items});
            if let Some((k, noise)) = envelope_noise {
                v[k] = noise;
            }
            if let Some((k, noise)) = item_noise {
                v["items"][k] = noise;
            }
            v
        })
}

fn check_no_leak(body: &[u8]) -> Result<(), TestCaseError> {
    let out = prepare(body, 1 << 16, registry(), &Pseudonymizer::insecure_dev());
    let shown = match &out {
        Ok(record) => format!("{record:?}"),
        Err(rejected) => format!("{rejected:?}"),
    };
    prop_assert!(!shown.contains(MARK), "a marked value leaked: {shown}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = prepare(&body, 1 << 16, registry(), &Pseudonymizer::insecure_dev());
    }

    #[test]
    fn arbitrary_json_never_panics_nor_leaks(v in arb_json()) {
        check_no_leak(&serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn near_valid_records_never_leak_identifiers(v in arb_record()) {
        check_no_leak(&serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn hex_is_the_lower_case_hex_of_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        prop_assert_eq!(super::hex(&bytes), hex::encode(&bytes));
    }
}
