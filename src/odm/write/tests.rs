//! parse(write(f)) == f, for arbitrary forms and for the forms of the sample file.

use proptest::prelude::*;

use super::*;
use crate::odm::clinical::ClinicalReader;
use crate::odm::model::{Position, Skipped, TransactionType, TypedAs};
use crate::odm::xml::Limits;

/// The one form of a document, positions cleared.
fn read_back(doc: &[u8]) -> FormInstance {
    let mut reader = ClinicalReader::new(doc, Limits::default());
    let mut form = reader.next().expect("a form").expect("read");
    assert!(reader.next().is_none(), "one form only");
    form.at = Position::default();
    for item in &mut form.items {
        item.at = Position::default();
    }
    form
}

/// OIDs and keys: never empty, with what needs escaping or normalising care.
fn oid() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 ._<>&\"'\t\n\r\u{e9}\u{b3}\u{33d5}\u{1d11e}\\]-]{1,10}"
}

/// Values: may be empty; `]]>` and line ends included.
fn text() -> impl Strategy<Value = String> {
    "([A-Za-z0-9 <>&\"'\t\n\r\u{e9}\u{20ac}\u{1d11e}]|\\]\\]>|\r\n){0,12}"
}

fn tx() -> impl Strategy<Value = Option<TransactionType>> {
    prop::option::of(prop_oneof![
        Just(TransactionType::Insert),
        Just(TransactionType::Update),
        Just(TransactionType::Remove),
        Just(TransactionType::Upsert),
        Just(TransactionType::Context),
    ])
}

fn audit() -> impl Strategy<Value = Option<AuditRecord>> {
    prop::option::of(
        (
            prop::option::of(oid()),
            prop::option::of(oid()),
            prop::option::of(oid()),
            prop::option::of(oid()),
            prop::option::of(oid()),
        )
            .prop_map(
                |(user_oid, location_oid, date_time, reason_for_change, source_id)| AuditRecord {
                    user_oid,
                    location_oid,
                    date_time,
                    reason_for_change,
                    source_id,
                },
            ),
    )
}

fn typed() -> impl Strategy<Value = Option<TypedAs>> {
    prop::option::of(prop_oneof![
        Just(TypedAs::String),
        Just(TypedAs::Integer),
        Just(TypedAs::PartialDate),
        Just(TypedAs::Boolean),
        Just(TypedAs::Uri),
    ])
}

fn item() -> impl Strategy<Value = ItemValue> {
    (
        prop_oneof![
            Just("IG.A".to_string()),
            Just("IG B".to_string()),
            Just(String::new()),
            oid()
        ],
        prop::option::of(prop_oneof![Just("1".to_string()), Just("2".to_string())]),
        tx(),
        oid(),
        (typed(), any::<bool>(), prop::option::of(text())),
        prop::option::of(oid()),
        tx(),
        audit(),
    )
        .prop_map(
            |(
                group_oid,
                group_repeat,
                group_tx,
                item_oid,
                (typed_as, null, value),
                unit_oid,
                tx,
                audit,
            )| {
                // What the reader can give: a null item has no value; a typed one has one unless null.
                let (is_null, value) = match (null, value) {
                    (true, _) => (true, None),
                    (false, None) if typed_as.is_some() => (false, Some(String::new())),
                    (false, value) => (false, value),
                };
                ItemValue {
                    group_oid,
                    group_repeat,
                    group_tx,
                    item_oid,
                    value,
                    is_null,
                    unit_oid,
                    tx,
                    typed_as,
                    audit,
                    at: Position::default(),
                }
            },
        )
}

prop_compose! {
    fn form()(
        file in (prop::option::of(oid()), prop::option::of(prop_oneof![Just(FileType::Snapshot), Just(FileType::Transactional)]), prop::option::of(oid()), prop::option::of(oid())),
        study in (oid(), prop::option::of(oid()), oid(), tx(), prop::option::of(oid())),
        event in prop::option::of((oid(), prop::option::of(oid()), tx())),
        own in (oid(), prop::option::of(oid()), tx(), audit()),
        items in prop::collection::vec(item(), 0..8),
    ) -> FormInstance {
        let (file_oid, file_type, created, as_of) = file;
        let (study_oid, metadata_version_oid, subject_key, subject_tx, site_oid) = study;
        let (form_oid, form_repeat, form_tx, audit) = own;
        FormInstance {
            file_oid, file_type, created, as_of, study_oid, metadata_version_oid, subject_key,
            subject_tx, site_oid,
            event_oid: event.as_ref().map(|e| e.0.clone()),
            event_repeat: event.as_ref().and_then(|e| e.1.clone()),
            event_tx: event.as_ref().and_then(|e| e.2),
            form_oid, form_repeat, tx: form_tx, audit, items,
            at: Position::default(),
            skipped: Skipped::default(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn reading_what_was_written_gives_the_form_back(f in form()) {
        let doc = write(&f).unwrap();
        prop_assert_eq!(read_back(&doc), f);
    }
}

#[test]
fn the_sample_forms_survive_writing_and_reading() {
    let sample = include_str!("../../../tests/data/odm/clinical-1.3.2.xml");
    let forms: Vec<FormInstance> = ClinicalReader::new(sample.as_bytes(), Limits::default())
        .map(|f| f.unwrap())
        .collect();
    assert_eq!(forms.len(), 3);
    for mut form in forms {
        let doc = write(&form).unwrap();
        form.at = Position::default();
        form.skipped = Skipped::default();
        for item in &mut form.items {
            item.at = Position::default();
        }
        assert_eq!(read_back(&doc), form);
    }
}

#[test]
fn a_small_form_is_written_as_minimal_odm() {
    let f = FormInstance {
        file_oid: None,
        file_type: Some(FileType::Snapshot),
        created: None,
        as_of: None,
        study_oid: "S".into(),
        metadata_version_oid: Some("M".into()),
        subject_key: "K 1".into(),
        subject_tx: None,
        site_oid: Some("SITE".into()),
        event_oid: None,
        event_repeat: None,
        event_tx: None,
        form_oid: "F".into(),
        form_repeat: Some("2".into()),
        tx: Some(TransactionType::Update),
        audit: None,
        items: vec![ItemValue {
            group_oid: "G".into(),
            group_repeat: None,
            group_tx: None,
            item_oid: "I".into(),
            value: Some("a\nb<\"".into()),
            is_null: false,
            unit_oid: Some("MU.KG".into()),
            tx: None,
            typed_as: None,
            audit: None,
            at: Position::default(),
        }],
        at: Position::default(),
        skipped: Skipped::default(),
    };
    let doc = String::from_utf8(write(&f).unwrap()).unwrap();
    assert_eq!(
        doc,
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ODM xmlns=\"{ODM13_NS}\" ODMVersion=\"1.3.2\" FileType=\"Snapshot\"><ClinicalData StudyOID=\"S\" MetaDataVersionOID=\"M\"><SubjectData SubjectKey=\"K 1\"><SiteRef LocationOID=\"SITE\"/><FormData FormOID=\"F\" FormRepeatKey=\"2\" TransactionType=\"Update\"><ItemGroupData ItemGroupOID=\"G\"><ItemData ItemOID=\"I\" Value=\"a&#10;b&lt;&quot;\"><MeasurementUnitRef MeasurementUnitOID=\"MU.KG\"/></ItemData></ItemGroupData></FormData></SubjectData></ClinicalData></ODM>"
        )
    );
}

#[test]
fn forms_no_document_could_give_are_refused() {
    let sample = include_str!("../../../tests/data/odm/clinical-1.3.2.xml");
    let good = ClinicalReader::new(sample.as_bytes(), Limits::default())
        .next()
        .unwrap()
        .unwrap();
    type Change = Box<dyn Fn(&mut FormInstance)>;
    let cases: Vec<(Change, WriteError)> = vec![
        (
            Box::new(|f| f.form_oid.clear()),
            WriteError::Empty("FormOID"),
        ),
        (
            Box::new(|f| f.form_repeat = Some(String::new())),
            WriteError::Empty("FormRepeatKey"),
        ),
        (
            Box::new(|f| f.subject_key = "a\u{1}".into()),
            WriteError::IllegalCharacter("SubjectKey"),
        ),
        (
            Box::new(|f| f.items[0].value = Some("\u{fffe}".into())),
            WriteError::IllegalCharacter("Value"),
        ),
        (
            Box::new(|f| f.items[3].value = Some("1".into())),
            WriteError::Inconsistent,
        ),
        (
            Box::new(|f| f.items[1].value = None),
            WriteError::Inconsistent,
        ),
        (
            Box::new(|f| f.items[1].typed_as = Some(TypedAs::HexBinary)),
            WriteError::Inconsistent,
        ),
        (
            Box::new(|f| f.event_oid = None),
            WriteError::EventlessDetails,
        ),
    ];
    for (change, expected) in cases {
        let mut f = good.clone();
        f.event_tx = Some(TransactionType::Insert);
        change(&mut f);
        assert_eq!(write(&f), Err(expected));
    }
    let mut f = good.clone();
    f.event_tx = Some(TransactionType::Insert);
    assert!(write(&f).is_ok(), "the near miss");
}
