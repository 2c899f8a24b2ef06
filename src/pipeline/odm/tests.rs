//! The mapping of one form instance: identity (record ids, pseudonymised subjects), context
//! (study, site, visit, form, defaults), capture time and protocol version; and the shared helpers
//! of the other test files.

use std::path::Path;

use serde_json::Value;

use super::*;
use crate::odm::clinical::{ClinicalReader, ReadError};
use crate::odm::xml::Limits;

/// The test protocols (map-study-*.yaml), loaded from a folder of their own.
pub fn registry() -> Registry {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/odm");
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "map-study-v1.yaml",
        "map-study-v2.yaml",
        "map-study-psn.yaml",
    ] {
        std::fs::copy(data.join(name), dir.path().join(name)).unwrap();
    }
    Registry::load(dir.path()).unwrap()
}

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/odm")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// Every form instance of `xml` (the reader must accept them all).
pub fn instances(xml: &str) -> Vec<FormInstance> {
    ClinicalReader::new(xml.as_bytes(), Limits::default())
        .map(|r| match r {
            Ok(f) => f,
            Err(ReadError::Form(e)) => panic!("the reader refused a form: {e}"),
            Err(ReadError::File(e)) => panic!("the reader refused the file: {e}"),
        })
        .collect()
}

pub fn map_all(xml: &str) -> Vec<Result<OdmForm, Refusal>> {
    let (registry, p) = (registry(), Pseudonymizer::insecure_dev());
    instances(xml)
        .iter()
        .map(|f| map(f, &registry, &p))
        .collect()
}

pub fn mapped(xml: &str) -> OdmForm {
    match map_all(xml).pop().unwrap() {
        Ok(form) => form,
        Err(r) => panic!("refused: {r}"),
    }
}

pub fn refused(xml: &str) -> Refusal {
    match map_all(xml).pop().unwrap() {
        Ok(form) => panic!("mapped: {form:?}"),
        Err(r) => r,
    }
}

/// A document of study `study` with `file_type` ("" for none) holding `clinical` in its
/// ClinicalData; CreationDateTime 2024-05-10.
pub fn document(file_type: &str, study: &str, clinical: &str) -> String {
    let file_type = if file_type.is_empty() {
        String::new()
    } else {
        format!(" FileType=\"{file_type}\"")
    };
    format!(
        "<ODM xmlns=\"http://www.cdisc.org/ns/odm/v1.3\" ODMVersion=\"1.3.2\"{file_type} \
         CreationDateTime=\"2024-05-10T09:00:00\">\n<ClinicalData StudyOID=\"{study}\">\n\
         {clinical}\n</ClinicalData>\n</ODM>\n"
    )
}

/// Subject S-1 of ST.MAP at SITE.01, visit SE.VISIT 1, form `form` (with `form_attrs`) holding
/// `body`, in a Snapshot file.
pub fn one_form(form: &str, form_attrs: &str, body: &str) -> String {
    in_file("Snapshot", form, form_attrs, body)
}

pub fn in_file(file_type: &str, form: &str, form_attrs: &str, body: &str) -> String {
    document(
        file_type,
        "ST.MAP",
        &format!(
            "<SubjectData SubjectKey=\"S-1\"><SiteRef LocationOID=\"SITE.01\"/>\
             <StudyEventData StudyEventOID=\"SE.VISIT 1\">\n\
             <FormData FormOID=\"{form}\"{form_attrs}>\n{body}\n</FormData>\
             </StudyEventData></SubjectData>"
        ),
    )
}

pub fn snapshot(form: &OdmForm) -> &serde_json::Map<String, Value> {
    match &form.delta {
        OdmDelta::Snapshot(items) => items,
        other => panic!("not a snapshot: {other:?}"),
    }
}

pub fn key<'a>(study: &'a str, subject: &'a str, visit: &'a str, form: &'a str) -> RecordKey<'a> {
    RecordKey {
        study,
        subject,
        visit,
        visit_repeat: "1",
        form,
        form_repeat: "1",
    }
}

#[test]
fn record_ids_are_fixed_for_good() {
    // Known answer: a change of namespace or name layout would make re-imports store copies.
    let id = key("ST.MAP", "1001", "SE.VISIT 1", "F.VS").record_id();
    assert_eq!(id.get_version_num(), 5);
    assert_eq!(id.to_string(), KNOWN_RECORD_ID);
}

/// Computed independently (Python: SHA-1 of the namespace's bytes and the length-prefixed fields,
/// version and variant bits set as RFC 9562 says).
const KNOWN_RECORD_ID: &str = "97323a06-622f-577b-bfc1-2073b5cb8d4d";

#[test]
fn every_identifying_field_and_repeat_key_makes_another_record() {
    let base = key("ST", "S", "V", "F");
    let mut seen = std::collections::HashSet::new();
    let variants = [
        base,
        RecordKey {
            study: "ST2",
            ..base
        },
        RecordKey {
            subject: "S2",
            ..base
        },
        RecordKey {
            visit: "V2",
            ..base
        },
        RecordKey {
            visit_repeat: "2",
            ..base
        },
        RecordKey { form: "F2", ..base },
        RecordKey {
            form_repeat: "2",
            ..base
        },
        // Fields that would run together if simply concatenated or joined with a separator.
        RecordKey {
            study: "STS",
            subject: "",
            ..base
        },
        RecordKey {
            subject: "S\u{1f}V",
            visit: "",
            ..base
        },
        RecordKey {
            visit: "V1",
            visit_repeat: "",
            ..base
        },
    ];
    for k in variants {
        assert!(seen.insert(k.record_id()), "a collision");
    }
    assert_eq!(base.record_id(), key("ST", "S", "V", "F").record_id());
}

#[test]
fn a_subject_key_the_study_declares_identifying_is_stored_and_keyed_as_its_pseudonym() {
    let doc = |subject: &str| {
        document(
            "Snapshot",
            "ST.PSN",
            &format!(
                "<SubjectData SubjectKey=\"{subject}\"><SiteRef LocationOID=\"SITE.01\"/>\
                 <StudyEventData StudyEventOID=\"SE.VISIT 1\"><FormData FormOID=\"F.VS\">\
                 <ItemGroupData ItemGroupOID=\"IG\"><ItemData ItemOID=\"I.PULSE\" Value=\"60\"/>\
                 </ItemGroupData></FormData></StudyEventData></SubjectData>"
            ),
        )
    };
    let jane = mapped(&doc("Jane Roe 1961"));
    assert!(jane.subject.starts_with("psn:"), "{}", jane.subject);
    assert!(!format!("{jane:?}").contains("Jane"));
    assert_eq!(
        jane.record_id,
        key("ST.PSN", &jane.subject, "SE.VISIT 1", "F.VS").record_id()
    );
    assert_ne!(
        jane.record_id,
        key("ST.PSN", "Jane Roe 1961", "SE.VISIT 1", "F.VS").record_id()
    );
    // Stable, and exact: keys that differ in case or spacing are other subjects, as when kept.
    assert_eq!(mapped(&doc("Jane Roe 1961")).record_id, jane.record_id);
    for other in ["jane roe 1961", "Jane  Roe 1961", "Jane Roe 1961 "] {
        let o = mapped(&doc(other));
        assert_ne!(o.subject, jane.subject, "{other:?}");
        assert_ne!(o.record_id, jane.record_id);
    }
    // Another key, other pseudonyms.
    let registry = registry();
    let other_key = Pseudonymizer::new(&[7u8; 32]).unwrap();
    let again = map(&instances(&doc("Jane Roe 1961"))[0], &registry, &other_key).unwrap();
    assert_ne!(again.subject, jane.subject);
    // A study that keeps its keys stores them as they are.
    let kept = mapped(&one_form("F.VS", "", ""));
    assert_eq!(kept.subject, "S-1");
}

#[test]
fn the_capture_time_picks_the_protocol_version_in_force() {
    let at = |stamp: &str| {
        one_form(
            "F.VS",
            "",
            &format!(
                "<AuditRecord><UserRef UserOID=\"U\"/><DateTimeStamp>{stamp}</DateTimeStamp>\
                 </AuditRecord><ItemGroupData ItemGroupOID=\"IG\">\
                 <ItemData ItemOID=\"I.HEIGHT\" Value=\"180\"/></ItemGroupData>"
            ),
        )
    };
    // I.HEIGHT exists from MDV.2 on, which starts on 2024-07-01 (the date as written counts).
    assert_eq!(
        mapped(&at("2024-07-01T00:30:00+02:00")).protocol.version,
        "MDV.2"
    );
    let r = refused(&at("2024-06-30T23:30:00-02:00"));
    assert_eq!(r.code, "undefined_items");
    assert!(
        r.reason.contains("form F.VS of study ST.MAP"),
        "{}",
        r.reason
    );
}

#[test]
fn study_site_visit_and_form_must_be_the_protocols() {
    let body = "<ItemGroupData ItemGroupOID=\"IG\"><ItemData ItemOID=\"I.PULSE\" Value=\"60\"/></ItemGroupData>";
    let ok = one_form("F.VS", "", body);
    assert_eq!(mapped(&ok).form, "F.VS");
    let swap = |from: &str, to: &str| refused(&ok.replacen(from, to, 1));
    // A file's OID is escaped in a reason; the protocol's own names are plain.
    let r = swap("StudyOID=\"ST.MAP\"", "StudyOID=\"ST.MAP&#10;\u{202e}x\"");
    assert_eq!(r.code, "unknown_study");
    assert!(
        r.reason.contains("\"ST.MAP\\u{a}\\u{202e}x\""),
        "{}",
        r.reason
    );
    assert_eq!(r.kind, RejectKind::Invalid);
    let r = swap("LocationOID=\"SITE.01\"", "LocationOID=\"SITE.99\"");
    assert_eq!(
        (r.code, r.reason.as_str()),
        ("unknown_site", "site is not one of study ST.MAP's sites")
    );
    let r = swap("StudyEventOID=\"SE.VISIT 1\"", "StudyEventOID=\"SE.NOPE\"");
    assert_eq!(
        (r.code, r.reason.as_str()),
        ("unknown_visit", "visit is not one of study ST.MAP's visits")
    );
    let r = swap("FormOID=\"F.VS\"", "FormOID=\"F.NOPE\"");
    assert_eq!(
        (r.code, r.reason.as_str()),
        ("unknown_form", "form is not one of study ST.MAP's forms")
    );
    let shown = r.to_string();
    assert!(
        shown.starts_with("the form at line 4, column 1 (FormOID \"F.NOPE\") is refused: "),
        "{shown}"
    );
    assert_eq!(r.rejected().reason, shown);
    assert!(!shown.contains("S-1") && !shown.contains("60"));
    // Near misses: the other site, and the defaults of MDV.1 when the file names none.
    assert_eq!(mapped(&ok.replace("SITE.01", "SITE 02")).site, "SITE 02");
    let bare = ok.replace("<SiteRef LocationOID=\"SITE.01\"/>", "");
    let bare = bare
        .replace("<StudyEventData StudyEventOID=\"SE.VISIT 1\">", "")
        .replace("</StudyEventData>", "");
    let f = mapped(&bare);
    assert_eq!(
        (f.site.as_str(), f.visit.as_str()),
        ("SITE.01", "SE.SCREEN")
    );
    // MDV.2 (in force from July) has no defaults.
    let july = bare.replace("2024-05-10T09:00:00", "2024-07-10T09:00:00");
    let r = refused(&july);
    assert_eq!(r.code, "no_site");
    assert!(
        r.reason.contains("sets no odm.default_site"),
        "{}",
        r.reason
    );
    let r = refused(&july.replace(
        "<SubjectData SubjectKey=\"S-1\">",
        "<SubjectData SubjectKey=\"S-1\"><SiteRef LocationOID=\"SITE.01\"/>",
    ));
    assert_eq!(r.code, "no_visit");
}

#[test]
fn a_form_without_any_capture_time_is_refused() {
    let body = "<ItemGroupData ItemGroupOID=\"IG\"><ItemData ItemOID=\"I.PULSE\" Value=\"60\"/></ItemGroupData>";
    let none = one_form("F.VS", "", body).replace(" CreationDateTime=\"2024-05-10T09:00:00\"", "");
    let r = refused(&none);
    assert_eq!(r.code, "no_capture_time");
    assert!(r.reason.contains("no CreationDateTime"), "{}", r.reason);
    let malformed = none.replace(
        "ODMVersion",
        "CreationDateTime=\"2001-05-31-T10:08:40-05:00\" ODMVersion",
    );
    let r = refused(&malformed);
    assert_eq!(r.code, "no_capture_time");
    assert!(
        r.reason.contains("1 date-time(s)") && !r.reason.contains("2001"),
        "{}",
        r.reason
    );
    // Near miss: a readable one anywhere in scope will do, the unreadable ones counted.
    let with_audit = malformed.replace(
        "<ItemGroupData",
        "<AuditRecord><DateTimeStamp>2024-02-01T10:00:00</DateTimeStamp></AuditRecord><ItemGroupData",
    );
    let f = mapped(&with_audit);
    assert_eq!(
        (f.captured_from, f.unreadable_timestamps),
        (CaptureSource::FormAudit, 1)
    );
}

#[test]
fn an_absent_or_empty_repeat_key_is_the_first_repeat() {
    let body = "<ItemGroupData ItemGroupOID=\"IG\"><ItemData ItemOID=\"I.PULSE\" Value=\"60\"/></ItemGroupData>";
    let base = instances(&one_form("F.VS", "", body)).remove(0);
    let (registry, p) = (registry(), Pseudonymizer::insecure_dev());
    let id = |event: Option<&str>, form: Option<&str>| {
        let mut f = base.clone();
        f.event_repeat = event.map(str::to_string);
        f.form_repeat = form.map(str::to_string);
        let m = map(&f, &registry, &p).unwrap();
        assert_eq!(
            (m.visit_repeat.as_str(), m.form_repeat.as_str()),
            (
                event.filter(|k| !k.is_empty()).unwrap_or("1"),
                form.filter(|k| !k.is_empty()).unwrap_or("1")
            )
        );
        m.record_id
    };
    let first = id(None, None);
    assert_eq!(
        first,
        key("ST.MAP", "S-1", "SE.VISIT 1", "F.VS").record_id()
    );
    for (event, form) in [
        (Some("1"), Some("1")),
        (Some(""), Some("")),
        (None, Some("1")),
    ] {
        assert_eq!(id(event, form), first, "{event:?} {form:?}");
    }
    for (event, form) in [(Some("2"), None), (None, Some("2")), (Some("01"), None)] {
        assert_ne!(id(event, form), first, "{event:?} {form:?}");
    }
}
