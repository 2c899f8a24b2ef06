//! Properties over arbitrary form instances and stored states: mapping never panics and never
//! shows a value, key or free text; what it maps passes validation's structural checks; a
//! snapshot applied is its items; applying any delta twice is applying it once.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::tests::registry;
use super::*;
use crate::odm::model::{AuditRecord, FileType, ItemValue, Skipped, TransactionType as Tx};
use crate::pipeline::validate::validate_items;

/// Every uploader text below carries this, so a reason or a `Debug` that shows one is caught.
const MARK: &str = "SECRET";

fn pick<T: Clone + std::fmt::Debug + 'static>(options: Vec<T>) -> impl Strategy<Value = T> {
    proptest::sample::select(options)
}

fn tx() -> impl Strategy<Value = Option<Tx>> {
    prop_oneof![
        6 => Just(None),
        1 => Just(Some(Tx::Insert)),
        1 => Just(Some(Tx::Update)),
        1 => Just(Some(Tx::Upsert)),
        1 => Just(Some(Tx::Remove)),
        1 => Just(Some(Tx::Context)),
    ]
}

fn text(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => pick(known.to_vec()).prop_map(str::to_string),
        1 => "[ -~\u{a0}-\u{3ff}\n]{0,12}".prop_map(|s| format!("{MARK}{s}")),
    ]
}

fn opt(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    proptest::option::weighted(0.7, s)
}

const STAMPS: &[&str] = &[
    "2024-03-02T08:30:00",
    "2024-03-02T08:30:00",
    "2024-07-02T08:30:00+02:00",
    "2001-05-31-T10:08:40",
    "",
];

fn audit() -> impl Strategy<Value = Option<AuditRecord>> {
    proptest::option::weighted(
        0.5,
        (
            opt(text(&["U.1", "U.2"])),
            opt(text(STAMPS)),
            opt(text(&["why"])),
        )
            .prop_map(|(user, stamp, why)| AuditRecord {
                user_oid: user,
                date_time: stamp,
                reason_for_change: why.map(|w| format!("{MARK} {w}")),
                ..AuditRecord::default()
            }),
    )
}

const VALUES: &[&str] = &[
    "1",
    "0",
    "2",
    "true",
    "064",
    " 72.5 ",
    "1e400",
    "2024-03",
    "2024-03-02",
    "2024",
    "2024-02-30",
    "08:30",
    "Rash",
    "",
    " ",
    "JVBER",
];

/// (form, item group, item) as the test protocol places them.
const PLACES: &[(&str, &str, &str)] = &[
    ("F.VS", "IG.VS", "I.PULSE"),
    ("F.VS", "IG.VS", "I.WEIGHT"),
    ("F.VS", "", "I.VSDAT"),
    ("F.VS", "IG.VS", "I.DONE"),
    ("F.VS", "IG.VS", "I.POS"),
    ("F.VS", "IG.VS", "I.ARM"),
    ("F.VS", "IG.VS", "I.NOTE"),
    ("F.VS", "IG.VS", "I.ONSET"),
    ("F.AE", "IG.AE", "I.AEYN"),
    ("F.AE", "IG.AELOG", "I.AETERM"),
    ("F.AE", "IG.AELOG", "I.AESTDAT"),
    ("F.AE", "IG.AELOG", "I.AESEV"),
    ("F.AE", "IG.CMLOG", "I.CMTRT"),
    ("F.AE", "IG.CMLOG", "I.CMDOSE"),
    ("F.CONSENT", "IG.C", "I.PDF"),
    ("F.CONSENT", "IG.C", "I.CONSDAT"),
];

/// An item mostly where the protocol puts it in `form`; sometimes anywhere, sometimes unknown.
fn item(form: &'static str) -> impl Strategy<Value = ItemValue> {
    let own: Vec<(&str, &str)> = PLACES
        .iter()
        .filter(|p| p.0 == form)
        .map(|p| (p.1, p.2))
        .collect();
    let own = if own.is_empty() {
        vec![("IG.X", "I.X")]
    } else {
        own
    };
    let anywhere: Vec<(&str, &str)> = PLACES.iter().map(|p| (p.1, p.2)).collect();
    let place = prop_oneof![
        12 => pick(own),
        1 => pick(anywhere),
        1 => (pick(vec!["", "IG.AELOG", "IG.X"]), pick(vec!["I.PULSE", "I.AETERM", "I.X"])),
    ];
    (
        (place, opt(text(&["1", "2", "10", ""])), tx()),
        (
            opt(text(VALUES)),
            any::<bool>(),
            opt(text(&["MU.KG", "MU.MG", "MU.BPM"])),
            tx(),
            audit(),
        ),
    )
        .prop_map(
            |(((group, oid), repeat, group_tx), (value, is_null, unit, tx, audit))| ItemValue {
                group_oid: group.to_string(),
                group_repeat: repeat,
                group_tx,
                item_oid: oid.to_string(),
                value: if is_null { None } else { value },
                is_null,
                unit_oid: unit,
                tx,
                typed_as: None,
                audit,
                at: Position::default(),
            },
        )
}

fn instance() -> impl Strategy<Value = FormInstance> {
    let form = pick(vec!["F.VS", "F.AE", "F.AE", "F.CONSENT", "F.X"]);
    form.prop_flat_map(|form| {
        (
            (
                pick(vec![
                    None,
                    Some(FileType::Snapshot),
                    Some(FileType::Transactional),
                ]),
                opt(text(STAMPS)),
                opt(text(STAMPS)),
                prop_oneof![8 => Just("ST.MAP"), 1 => Just("ST.PSN"), 1 => Just("ST.X")],
                text(&["1001", "S-1"]),
                (tx(), opt(text(&["SITE.01", "SITE 02"]))),
            ),
            (
                opt(text(&["SE.SCREEN", "SE.VISIT 1"])),
                opt(text(&["1", "2", ""])),
                tx(),
                Just(form),
                opt(text(&["1", "2"])),
                (tx(), audit()),
            ),
            proptest::collection::vec(item(form), 0..12),
        )
    })
    .prop_map(
        |(
            (file_type, created, as_of, study, subject, (subject_tx, site)),
            (event, event_repeat, event_tx, form, form_repeat, (tx, audit)),
            items,
        )| {
            FormInstance {
                file_oid: None,
                file_type,
                created,
                as_of,
                study_oid: study.to_string(),
                metadata_version_oid: None,
                subject_key: subject,
                subject_tx,
                site_oid: site,
                event_oid: event,
                event_repeat,
                event_tx,
                form_oid: form.to_string(),
                form_repeat,
                tx,
                audit,
                items,
                at: Position::default(),
                skipped: Skipped::default(),
            }
        },
    )
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        "[a-z:]{0,6}".prop_map(Value::String)
    ]
}

/// A stored state (or anything a column could hold), shaped like one most of the time.
fn stored() -> impl Strategy<Value = Value> {
    let names = || {
        pick(vec![
            "I.AEYN", "I.PULSE", "I.AETERM", "IG.AELOG", "IG.CMLOG",
        ])
    };
    let row = proptest::collection::btree_map(names(), scalar(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    let rows = proptest::collection::btree_map(
        pick(vec!["1", "2", "10"]),
        prop_oneof![4 => row, 1 => scalar()],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    prop_oneof![
        6 => proptest::collection::btree_map(names(), prop_oneof![scalar(), rows], 0..5)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        1 => scalar(),
    ]
}

thread_local! {
    /// Loaded once per thread: every case maps against the same protocols.
    static REGISTRY: Registry = registry();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mapping_never_panics_nor_shows_what_the_file_holds(
        instances in proptest::collection::vec(instance(), 1..4),
        before in stored(),
    ) {
        let p = Pseudonymizer::insecure_dev();
        for instance in &instances {
            match REGISTRY.with(|registry| map(instance, registry, &p)) {
                Err(refusal) => {
                    let shown = format!("{refusal} {refusal:?}");
                    prop_assert!(!shown.contains(MARK), "{}", shown);
                }
                Ok(form) => {
                    let shown = format!("{form:?}");
                    prop_assert!(!shown.contains(MARK), "{}", shown);
                    let after = apply(&before, &form.delta);
                    prop_assert_eq!(&apply(&after, &form.delta), &after);
                    if let OdmDelta::Snapshot(items) = &form.delta {
                        prop_assert_eq!(&after, &Value::Object(items.clone()));
                    }
                    // What is mapped is what validation takes: types, groups and rows hold.
                    let fresh = match apply(&Value::Null, &form.delta) {
                        Value::Object(m) => m,
                        _ => Map::new(),
                    };
                    let checked = validate_items(&form.protocol, form.context(), fresh.clone());
                    prop_assert!(checked.is_ok(), "{}", checked.err().map(|r| r.reason).unwrap_or_default());
                    // ... and comes out as it went in: the values were canonical already.
                    let checked = checked.map(|c| c.items).unwrap_or_default();
                    prop_assert_eq!(Value::Object(checked), Value::Object(fresh));
                }
            }
        }
    }

    #[test]
    fn a_snapshot_applied_is_its_items_and_any_delta_applied_twice_is_applied_once(
        before in stored(),
        items in stored(),
        rows in proptest::collection::btree_map("[12]", prop_oneof![
            Just(RowChange::Remove),
            stored().prop_map(|v| RowChange::Replace(v.as_object().cloned().unwrap_or_default())),
            proptest::collection::btree_map("I\\.[AB]", prop_oneof![Just(ItemChange::Remove), scalar().prop_map(ItemChange::Set)], 0..3)
                .prop_map(RowChange::Change),
        ], 0..3),
        changes in proptest::collection::btree_map("I\\.[AB]", prop_oneof![Just(ItemChange::Remove), scalar().prop_map(ItemChange::Set)], 0..3),
    ) {
        let items = items.as_object().cloned().unwrap_or_default();
        prop_assert_eq!(apply(&before, &OdmDelta::Snapshot(items.clone())), Value::Object(items));
        let merge = OdmDelta::Merge(Merge { items: changes, groups: [("IG.AELOG".to_string(), rows)].into() });
        for delta in [merge, OdmDelta::Remove, OdmDelta::Context] {
            let once = apply(&before, &delta);
            prop_assert_eq!(apply(&once, &delta), once);
        }
    }
}
