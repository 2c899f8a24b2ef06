//! The ClinicalData reader over the shapes real exports use.

use super::*;
use crate::odm::model::{ItemValue, TypedAs};
use crate::odm::xml::{Malformed, ODM13_NS};

pub(super) const SAMPLE: &str = include_str!("../../../tests/data/odm/clinical-1.3.2.xml");

pub(super) fn read_all(doc: &str) -> (Vec<Result<FormInstance, ReadError>>, Summary) {
    read_limited(doc, Limits::default())
}

pub(super) fn read_limited(
    doc: &str,
    limits: Limits,
) -> (Vec<Result<FormInstance, ReadError>>, Summary) {
    let mut reader = ClinicalReader::new(doc.as_bytes(), limits);
    let out: Vec<_> = reader.by_ref().collect();
    (out, reader.summary().clone())
}

pub(super) fn forms(doc: &str) -> Vec<FormInstance> {
    read_all(doc)
        .0
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// A document: root, one ClinicalData, one subject, `body` inside the subject.
pub(super) fn subject(body: &str) -> String {
    format!(
        "<ODM xmlns=\"{ODM13_NS}\" ODMVersion=\"1.3.2\" FileType=\"Snapshot\"><ClinicalData StudyOID=\"S\" MetaDataVersionOID=\"M\"><SubjectData SubjectKey=\"K\">{body}</SubjectData></ClinicalData></ODM>"
    )
}

/// A form in one item group, in one event.
pub(super) fn form(items: &str) -> String {
    subject(&format!(
        "<StudyEventData StudyEventOID=\"E\"><FormData FormOID=\"F\"><ItemGroupData ItemGroupOID=\"G\">{items}</ItemGroupData></FormData></StudyEventData>"
    ))
}

/// Where the element whose start tag holds `needle` starts.
pub(super) fn pos_of(doc: &str, needle: &str) -> Position {
    let at = doc.find(needle).expect("in the document");
    let lt = doc[..at].rfind('<').unwrap();
    let line_start = doc[..lt].rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: doc[..lt].matches('\n').count() as u64 + 1,
        column: doc[line_start..lt].chars().count() as u64 + 1,
    }
}

fn value(
    group: &str,
    repeat: Option<&str>,
    oid: &str,
    value: Option<&str>,
    at: Position,
) -> ItemValue {
    ItemValue {
        group_oid: group.into(),
        group_repeat: repeat.map(Into::into),
        group_tx: None,
        item_oid: oid.into(),
        value: value.map(Into::into),
        is_null: false,
        unit_oid: None,
        tx: None,
        typed_as: None,
        audit: None,
        at,
    }
}

fn audit(user: &str, date: Option<&str>, reason: Option<&str>) -> AuditRecord {
    AuditRecord {
        user_oid: Some(user.into()),
        location_oid: None,
        date_time: date.map(Into::into),
        reason_for_change: reason.map(Into::into),
        source_id: None,
    }
}

#[test]
fn the_sample_reads_into_three_forms_with_their_context() {
    let doc = SAMPLE;
    let (read, summary) = read_all(doc);
    let got: Vec<FormInstance> = read.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), 3);
    let at = |needle| pos_of(doc, needle);

    let vitals = &got[0];
    assert_eq!(vitals.file_oid.as_deref(), Some("F.2024.1"));
    assert_eq!(vitals.file_type, Some(FileType::Transactional));
    assert_eq!(vitals.created.as_deref(), Some("2024-03-05T10:00:00+01:00"));
    assert_eq!(vitals.as_of.as_deref(), Some("2024-03-05T09:00:00+01:00"));
    assert_eq!(
        (
            vitals.study_oid.as_str(),
            vitals.metadata_version_oid.as_deref()
        ),
        ("ST.1", Some("MDV.1"))
    );
    assert_eq!(vitals.subject_key, "SUBJ 001");
    assert_eq!(vitals.subject_tx, Some(TransactionType::Insert));
    assert_eq!(vitals.site_oid.as_deref(), Some("SITE.1"));
    assert_eq!(vitals.event_oid.as_deref(), Some("SE.VISIT 1"));
    assert_eq!(vitals.event_repeat, None, "an empty repeat key is absent");
    assert_eq!(vitals.form_oid, "F.VITALS");
    assert_eq!(vitals.form_repeat.as_deref(), Some("1"));
    assert_eq!(vitals.tx, Some(TransactionType::Upsert));
    assert_eq!(vitals.at, at("FormOID=\"F.VITALS\""));
    let mut form_audit = audit("U.2", Some("2024-03-02T08:30:00Z"), Some("typo"));
    form_audit.location_oid = Some("SITE.1".into());
    assert_eq!(
        vitals.audit,
        Some(form_audit),
        "the form's own AuditRecord is nearest"
    );
    let mut weight = value("IG.VS", None, "I.WEIGHT", Some("72.5"), at("\"I.WEIGHT\""));
    weight.unit_oid = Some("MU.KG".into());
    let mut pulse = value("IG.VS", None, "I.PULSE", Some("64"), at("\"I.PULSE\""));
    pulse.unit_oid = Some("MU.BPM".into());
    pulse.typed_as = Some(TypedAs::Integer);
    let note = value(
        "IG.VS",
        None,
        "I.NOTE",
        Some("first line second line\nthird"),
        at("\"I.NOTE\""),
    );
    let mut temp = value("IG.VS", None, "I.TEMP", None, at("\"I.TEMP\""));
    temp.is_null = true;
    let mu = value("IG.VS", None, "I.MU", Some("10³/㎕ <&>"), at("\"I.MU\""));
    assert_eq!(vitals.items, vec![weight, pulse, note, temp, mu]);
    let redcap = "https://projectredcap.org".to_string();
    assert_eq!(vitals.skipped.odm_elements, [("Annotation", 1)].into());
    assert_eq!(
        vitals.skipped.extension_elements,
        [(redcap.clone(), 1)].into()
    );
    assert_eq!(
        vitals.skipped.extension_attributes,
        [(redcap.clone(), 1)].into()
    );

    let ae = &got[1];
    assert_eq!(ae.event_oid.as_deref(), Some("SE.AE"));
    assert_eq!(
        ae.audit,
        Some(audit("U.3", Some("2024-03-03T00:00:00Z"), None)),
        "the event's"
    );
    let mut term = value(
        "IG.AELOG",
        Some("1"),
        "I.AETERM",
        Some("Headache"),
        at("\"I.AETERM\">Head"),
    );
    term.typed_as = Some(TypedAs::String);
    let mut start = value(
        "IG.AELOG",
        Some("1"),
        "I.AESTDAT",
        Some("2024-03"),
        at("\"I.AESTDAT\">2024-03"),
    );
    start.typed_as = Some(TypedAs::PartialDate);
    let row2 = Some(audit("U.4", None, Some("entered twice")));
    let mut removed = value(
        "IG.AELOG",
        Some("2"),
        "I.AETERM",
        None,
        at("\"I.AETERM\" Trans"),
    );
    removed.group_tx = Some(TransactionType::Remove);
    removed.tx = Some(TransactionType::Remove);
    removed.audit = row2.clone();
    let mut year = value(
        "IG.AELOG",
        Some("2"),
        "I.AESTDAT",
        Some("2024"),
        at("\"I.AESTDAT\"><Value"),
    );
    year.group_tx = Some(TransactionType::Remove);
    year.audit = row2;
    assert_eq!(ae.items, vec![term, start, removed, year]);
    assert!(ae.skipped.is_empty());

    let dm = &got[2];
    assert_eq!(
        (dm.study_oid.as_str(), dm.metadata_version_oid.as_deref()),
        ("ST.2", Some("MDV.9"))
    );
    assert_eq!(
        (dm.subject_key.as_str(), dm.site_oid.as_deref()),
        ("7", None)
    );
    assert_eq!((dm.event_oid.as_deref(), dm.audit.as_ref()), (None, None));
    assert_eq!(dm.items[0].typed_as, Some(TypedAs::Boolean));
    assert_eq!(dm.items[0].value.as_deref(), Some("1"));

    assert_eq!(
        (
            summary.clinical_data,
            summary.subjects,
            summary.forms,
            summary.refused
        ),
        (2, 2, 3, 0)
    );
    let oc = "http://www.openclinica.org/ns/odm_ext_v130/v3.1".to_string();
    assert_eq!(
        summary.skipped.extension_attributes,
        [(redcap.clone(), 2), (oc, 1)].into()
    );
    assert_eq!(summary.skipped.extension_elements, [(redcap, 1)].into());
    assert_eq!(
        summary.skipped.odm_elements,
        [("Study", 1), ("AdminData", 1), ("Annotation", 1)].into()
    );
}

/// Every value the reader yields is the one a conformant reader finds in the same element.
#[test]
fn values_match_what_roxmltree_reads() {
    let tree = roxmltree::Document::parse(SAMPLE).unwrap();
    let expected: Vec<(String, Option<String>)> = tree
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name().starts_with("ItemData"))
        .map(|n| {
            let oid = n.attribute("ItemOID").unwrap().to_string();
            let value = if n.attribute("IsNull") == Some("Yes") {
                None
            } else if n.tag_name().name() == "ItemData" {
                n.attribute("Value").map(str::to_string).or_else(|| {
                    n.children()
                        .find(|c| c.tag_name().name() == "Value")
                        .and_then(|c| c.text().map(str::to_string))
                })
            } else {
                Some(n.text().unwrap_or("").to_string())
            };
            (oid, value)
        })
        .collect();
    let got: Vec<_> = forms(SAMPLE)
        .into_iter()
        .flat_map(|f| f.items)
        .map(|i| (i.item_oid, i.value))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn a_form_directly_under_the_subject_has_no_event_and_the_subjects_audit() {
    let doc = subject(
        "<AuditRecord><UserRef UserOID=\"U\"/></AuditRecord><SiteRef LocationOID=\"\"/><FormData FormOID=\"F\" FormRepeatKey=\"\"><ItemGroupData ItemGroupOID=\"G\" ItemGroupRepeatKey=\"\"><ItemData ItemOID=\"I\" Value=\"\"/></ItemGroupData></FormData>",
    );
    let got = forms(&doc);
    let f = &got[0];
    assert_eq!(
        (
            f.event_oid.as_ref(),
            f.form_repeat.as_ref(),
            f.site_oid.as_ref()
        ),
        (None, None, None)
    );
    assert_eq!(
        f.audit.as_ref().and_then(|a| a.user_oid.as_deref()),
        Some("U")
    );
    assert_eq!(
        f.items[0].group_repeat, None,
        "empty repeat keys are absent"
    );
    assert_eq!(
        f.items[0].value.as_deref(),
        Some(""),
        "an empty Value is an empty value"
    );
}

#[test]
fn dataset_xml_is_refused_as_not_case_report_forms() {
    let doc = format!(
        "<ODM xmlns=\"{ODM13_NS}\" xmlns:data=\"http://www.cdisc.org/ns/Dataset-XML/v1.0\" ODMVersion=\"1.3.2\" FileType=\"Snapshot\">\n<ClinicalData StudyOID=\"S\" MetaDataVersionOID=\"M\">\n<ItemGroupData ItemGroupOID=\"IG.DM\" data:ItemGroupDataSeq=\"1\"><ItemData ItemOID=\"IT.DM.USUBJID\" Value=\"01-001\"/></ItemGroupData></ClinicalData></ODM>"
    );
    let (read, _) = read_all(&doc);
    assert_eq!(read.len(), 1);
    let Err(ReadError::File(e)) = &read[0] else {
        panic!("{read:?}")
    };
    assert_eq!(e.kind, Refusal::NotCaseReportForms);
    assert_eq!(e.at, Position { line: 3, column: 1 });
    // Near miss: the same group inside a form of a subject is case report form data.
    assert_eq!(
        forms(&form(
            "<ItemData ItemOID=\"IT.DM.USUBJID\" Value=\"01-001\"/>"
        ))
        .len(),
        1
    );
}

/// "1.3.2" files in the ODM 2.0 shape: item groups where forms belong, nested in each other.
#[test]
fn the_odm_2_structure_is_refused_with_its_own_reason() {
    for body in [
        "<StudyEventData StudyEventOID=\"E\">\n<ItemGroupData ItemGroupOID=\"IG.F\"><ItemGroupData ItemGroupOID=\"IG.R\"><ItemData ItemOID=\"I\"><Value>1</Value></ItemData></ItemGroupData></ItemGroupData></StudyEventData>",
        "\n<ItemGroupData ItemGroupOID=\"IG.F\"/>",
    ] {
        let doc = subject(body);
        check_odm2_shape(&doc, "\"IG.F\"");
    }
    // ClinicalData inside Study.
    let doc = format!(
        "<ODM xmlns=\"{ODM13_NS}\"><Study OID=\"S\"><MetaDataVersion OID=\"M\"/>\n<ClinicalData StudyOID=\"S\" MetaDataVersionOID=\"M\"/></Study></ODM>"
    );
    check_odm2_shape(&doc, "StudyOID");
    // Near miss: a Study with its metadata and nothing else, then the data.
    let doc = form("").replace("<ClinicalData", "<Study OID=\"S\"><MetaDataVersion OID=\"M\"><ItemGroupDef OID=\"G\"/></MetaDataVersion></Study><ClinicalData");
    assert_eq!(forms(&doc).len(), 1);
}

fn check_odm2_shape(doc: &str, needle: &str) {
    let (read, _) = read_all(doc);
    let [Err(ReadError::File(e))] = &read[..] else {
        panic!("{read:?}")
    };
    assert_eq!(e.kind, Refusal::Odm2Structure);
    assert_eq!(e.at, pos_of(doc, needle));
}

/// ODM puts a subject's AuditRecord before its events; some exports put it after. The forms read
/// by then cannot get it (that would hold a whole subject in memory): they are counted.
#[test]
fn an_audit_record_after_the_forms_is_counted_as_late() {
    let doc = subject(
        "<StudyEventData StudyEventOID=\"E\"><FormData FormOID=\"F\"/></StudyEventData><AuditRecord><UserRef UserOID=\"U\"/></AuditRecord>",
    );
    let (read, summary) = read_all(&doc);
    assert_eq!(read[0].as_ref().unwrap().audit, None);
    assert_eq!(summary.late_audit_records, 1);
    let doc = subject(
        "<AuditRecord><UserRef UserOID=\"U\"/></AuditRecord><StudyEventData StudyEventOID=\"E\"><FormData FormOID=\"F\"/></StudyEventData>",
    );
    let (read, summary) = read_all(&doc);
    assert!(read[0].as_ref().unwrap().audit.is_some());
    assert_eq!(summary.late_audit_records, 0);
}

#[test]
fn a_missing_metadata_version_or_group_oid_is_absent_not_an_error() {
    let doc = form("<ItemData ItemOID=\"I\" Value=\"1\"/>")
        .replace(" MetaDataVersionOID=\"M\"", "")
        .replace("ItemGroupOID=\"G\"", "ItemGroupOID=\"\"");
    let got = forms(&doc);
    assert_eq!(got[0].metadata_version_oid, None);
    assert_eq!(got[0].items[0].group_oid, "");
}

#[test]
fn a_file_type_odm_does_not_define_refuses_the_file() {
    let doc = form("").replace("FileType=\"Snapshot\"", "FileType=\"Snapshots\"");
    let (read, _) = read_all(&doc);
    assert!(matches!(
        &read[..],
        [Err(ReadError::File(FileError {
            kind: Refusal::FileType,
            ..
        }))]
    ));
    for near in ["FileType=\"Transactional\"", ""] {
        let doc = form("").replace("FileType=\"Snapshot\"", near);
        assert_eq!(forms(&doc).len(), 1, "{near}");
    }
}

#[test]
fn an_xml_error_after_some_forms_ends_the_reading() {
    let doc = form("<ItemData ItemOID=\"I\" Value=\"1\"/>")
        .replace("</SubjectData>", "<FormData FormOID=\"F2\"></SubjectData>");
    let (read, _) = read_all(&doc);
    assert_eq!(read.len(), 2);
    assert!(read[0].is_ok());
    let Err(ReadError::File(e)) = &read[1] else {
        panic!()
    };
    assert_eq!(e.kind, Refusal::Malformed(Malformed::MismatchedEnd));
}

#[test]
fn vendor_elements_and_attributes_are_skipped_and_counted_by_namespace() {
    let doc = form(
        "<ItemData ItemOID=\"I\" Value=\"1\" v:a=\"x\" w:b=\"y\" xmlns:v=\"urn:v\" xmlns:w=\"urn:w\"><v:Status><v:Deep/></v:Status></ItemData><Unknown xmlns=\"\"/><Flag/>",
    );
    let got = forms(&doc);
    let s = &got[0].skipped;
    assert_eq!(
        s.extension_attributes,
        [("urn:v".into(), 1), ("urn:w".into(), 1)].into()
    );
    assert_eq!(
        s.extension_elements,
        [("urn:v".into(), 1), ("(no namespace)".into(), 1)].into()
    );
    assert_eq!(s.odm_elements, [("Flag", 1)].into());
    assert_eq!(got[0].items.len(), 1);
}
