//! The metadata reader over the hand-written fixtures of `tests/data/odm` (the shapes CDISC,
//! REDCap and OpenClinica exports have) and over small documents for each refusal.

use super::read::read_capped;
use super::*;
use crate::odm::xml::{Limits, ODM13_NS, Refusal};

const CDISC: &[u8] = include_bytes!("../../../tests/data/odm/cdisc-metadata.xml");
const REDCAP: &[u8] = include_bytes!("../../../tests/data/odm/redcap-metadata.xml");
const OPENCLINICA: &[u8] = include_bytes!("../../../tests/data/odm/openclinica-metadata.xml");

fn md(doc: &[u8]) -> Metadata {
    read(doc, Limits::default()).expect("read")
}

fn odm(body: &str) -> String {
    format!(r#"<ODM xmlns="{ODM13_NS}" ODMVersion="1.3.2" FileType="Snapshot">{body}</ODM>"#)
}

fn refusal(doc: &str) -> MetadataError {
    read(doc.as_bytes(), Limits::default()).expect_err("refused")
}

fn item<'a>(mdv: &'a MetaDataVersion, oid: &str) -> &'a ItemDef {
    mdv.items.iter().find(|i| i.oid == oid).expect(oid)
}

#[test]
fn a_cdisc_study_is_read_whole() {
    let md = md(CDISC);
    assert_eq!(md.studies.len(), 1);
    let study = &md.studies[0];
    assert_eq!(study.oid, "ST.CARDIO");
    assert_eq!(study.name.as_deref(), Some("Cardio Test Study"));
    assert_eq!(study.protocol_name.as_deref(), Some("CARDIO-01"));
    let units: Vec<&str> = study.units.iter().map(|u| u.oid.as_str()).collect();
    assert_eq!(units, ["MU.MMHG", "MU.KG", "MU.LB"]);
    assert_eq!(study.units[1].symbol.others(), ["fr"]);
    let mdv = &study.versions[0];
    assert_eq!(mdv.oid, "MDV.CARDIO.2");
    let protocol: Vec<&str> = mdv.protocol.iter().map(|r| r.oid.as_str()).collect();
    assert_eq!(protocol, ["SE.SCREEN", "SE.WEEK4"]);
    assert!(mdv.protocol.iter().all(|r| r.mandatory));
    assert_eq!(mdv.events.len(), 3);
    assert_eq!(mdv.events[2].repeating.as_deref(), Some("Yes"));
    assert_eq!(mdv.events[2].kind.as_deref(), Some("Common"));
    assert_eq!(mdv.forms.len(), 3);
    let ae = &mdv.forms[2];
    assert_eq!(ae.groups[1].condition.as_deref(), Some("COND.NOAE"));
    assert!(!ae.groups[1].mandatory);
    assert_eq!(mdv.groups.len(), 5);
    let log = mdv.groups.iter().find(|g| g.oid == "IG.AE").unwrap();
    assert_eq!(log.repeating.as_deref(), Some("Yes"));
    assert_eq!(log.items.len(), 5);
    let vs = mdv.groups.iter().find(|g| g.oid == "IG.VS").unwrap();
    assert_eq!(vs.items[3].method.as_deref(), Some("MT.DIA"));
    assert_eq!(mdv.items.len(), 21);
    assert_eq!(mdv.code_lists.len(), 6);
    assert_eq!(mdv.conditions[0].oid, "COND.NOAE");
    assert_eq!(mdv.methods[0].oid, "MT.DIA");
    // Admin data: locations with their types; users by OID only.
    let admin = &md.admin[0];
    assert_eq!(admin.study_oid.as_deref(), Some("ST.CARDIO"));
    let locations: Vec<(&str, Option<&str>)> = admin
        .locations
        .iter()
        .map(|l| (l.oid.as_str(), l.kind.as_deref()))
        .collect();
    assert_eq!(
        locations,
        [
            ("LOC.SITE.01", Some("Site")),
            ("LOC.SITE.02", None),
            ("LOC.LAB", Some("Lab"))
        ]
    );
    assert_eq!(admin.users, ["USR.1"]);
    assert_eq!(admin.signature_defs, 1);
    // What has no place in a protocol is counted.
    assert_eq!(md.documentation.get("Alias"), Some(&1));
    assert_eq!(md.documentation.get("StudyDescription"), Some(&1));
    assert_eq!(md.clinical_data, 0);
}

#[test]
fn item_definitions_keep_types_texts_units_and_range_checks() {
    let md = md(CDISC);
    let mdv = &md.studies[0].versions[0];
    let sysbp = item(mdv, "I.SYSBP");
    assert_eq!(sysbp.data_type.as_deref(), Some("integer"));
    assert_eq!(sysbp.length.as_deref(), Some("3"));
    assert_eq!(sysbp.units, ["MU.MMHG"]);
    assert_eq!(sysbp.range_checks.len(), 4);
    let first = &sysbp.range_checks[0];
    assert_eq!(first.comparator.as_deref(), Some("LT"));
    assert_eq!(first.soft_hard.as_deref(), Some("Hard"));
    assert_eq!(first.values, ["300"]);
    assert_eq!(first.unit.as_deref(), Some("MU.MMHG"));
    assert_eq!(first.message.best().as_deref(), Some("Below 300"));
    let temp = item(mdv, "I.TEMP");
    assert!(temp.range_checks[1].formal_expression);
    assert!(temp.range_checks[1].comparator.is_none());
    assert_eq!(temp.significant_digits.as_deref(), Some("1"));
    let position = item(mdv, "I.POSITION");
    assert_eq!(position.range_checks[0].values, ["SITTING", "SUPINE"]);
    let birth = item(mdv, "I.BRTHDTC");
    assert_eq!(birth.question.best().as_deref(), Some("Date of birth"));
    assert_eq!(birth.question.others(), ["fr"]);
    assert_eq!(item(mdv, "I.WEIGHT").units, ["MU.KG", "MU.LB"]);
    assert_eq!(item(mdv, "I.SEX").code_list.as_deref(), Some("CL.SEX"));
    let sex = mdv.code_lists.iter().find(|c| c.oid == "CL.SEX").unwrap();
    assert_eq!(sex.items[0].code, "F");
    assert_eq!(sex.items[0].decode.best().as_deref(), Some("Female"));
    let ethnic = mdv
        .code_lists
        .iter()
        .find(|c| c.oid == "CL.ETHNIC")
        .unwrap();
    assert_eq!(ethnic.items.len(), 2);
    assert!(ethnic.items[0].decode.is_empty());
    let iso = mdv
        .code_lists
        .iter()
        .find(|c| c.oid == "CL.ISO3166")
        .unwrap();
    assert_eq!(iso.external.as_deref(), Some("ISO3166"));
    assert!(iso.items.is_empty());
}

#[test]
fn users_are_kept_by_oid_only() {
    let md = md(CDISC);
    let shown = format!("{md:?}");
    for what in ["Jane", "Roe", "555"] {
        assert!(!shown.contains(what), "{what} was kept");
    }
}

#[test]
fn redcap_vendor_attributes_are_kept_on_item_definitions_and_the_rest_counted() {
    let md = md(REDCAP);
    let mdv = &md.studies[0].versions[0];
    assert!(mdv.events.is_empty());
    assert!(md.admin.is_empty());
    assert_eq!(md.clinical_data, 1);
    let record = mdv
        .vendor
        .iter()
        .find(|a| a.local == "RecordIdField")
        .unwrap();
    assert_eq!(record.ns, "https://projectredcap.org");
    assert_eq!(record.value, "record_id");
    let given = item(mdv, "given_name");
    assert_eq!(given.vendor_attr("projectredcap", "Identifier"), Some("y"));
    assert_eq!(
        given.vendor_attr("projectredcap", "FieldType"),
        Some("text")
    );
    assert_eq!(
        item(mdv, "family_name").vendor_attr("projectredcap", "Identifier"),
        None
    );
    assert_eq!(
        item(mdv, "bmi").vendor_attr("projectredcap", "Calculation"),
        Some("[weight_kg]*10000/([height_cm]*[height_cm])")
    );
    // GlobalVariables' redcap elements and the formatted question are read past and counted;
    // the ItemRefs' redcap:Variable attributes too. The schema location is no vendor extension.
    let ns = "https://projectredcap.org";
    assert_eq!(md.skipped.extension_elements.get(ns), Some(&3));
    assert!(md.skipped.extension_attributes.get(ns).unwrap() >= &17);
    assert!(
        !md.skipped
            .extension_attributes
            .contains_key("http://www.w3.org/2001/XMLSchema-instance")
    );
    // Texts without xml:lang are the texts.
    assert_eq!(
        item(mdv, "smoker").question.best().as_deref(),
        Some("Do you smoke?")
    );
}

#[test]
fn openclinica_site_studies_include_the_parent_and_phi_flags_are_read() {
    let md = md(OPENCLINICA);
    let oids: Vec<&str> = md.studies.iter().map(|s| s.oid.as_str()).collect();
    assert_eq!(oids, ["S_ONCO", "S_ONCO_SITE1", "S_ONCO_SITE2"]);
    let site = &md.studies[1].versions[0];
    assert_eq!(
        site.includes,
        [Include {
            study_oid: "S_ONCO".into(),
            metadata_version_oid: "v1.0.0".into()
        }]
    );
    assert!(site.items.is_empty());
    let mdv = &md.studies[0].versions[0];
    assert_eq!(item(mdv, "I_PATIE_HOSPNUM").vendor_phi, ["F_PATIENT_V1"]);
    assert!(item(mdv, "I_PATIE_TEMP").vendor_phi.is_empty());
    // Questions written over several lines are made one line.
    assert_eq!(
        item(mdv, "I_PATIE_INITIALS").question.best().as_deref(),
        Some("Patient initials:")
    );
    let oc = "http://www.openclinica.org/ns/odm_ext_v130/v3.1";
    assert!(md.skipped.extension_elements.get(oc).unwrap() >= &3);
    assert_eq!(
        md.skipped
            .extension_elements
            .get("http://www.openclinica.org/ns/rules/v3.1"),
        Some(&1)
    );
    assert_eq!(md.admin.len(), 2);
    assert_eq!(md.admin[1].users, ["USR_2"]);
}

#[test]
fn a_vendor_phi_attribute_on_the_item_definition_flags_it() {
    let doc = odm(
        r#"<Study OID="S" xmlns:v="urn:vendor"><MetaDataVersion OID="M">
           <ItemDef OID="I.A" Name="A" DataType="text" v:PHI="Yes"/>
           <ItemDef OID="I.B" Name="B" DataType="text" v:PHI="No"/>
           </MetaDataVersion></Study>"#,
    );
    let md = md(doc.as_bytes());
    let mdv = &md.studies[0].versions[0];
    assert_eq!(item(mdv, "I.A").vendor_phi, ["*"]);
    assert!(item(mdv, "I.B").vendor_phi.is_empty());
}

#[test]
fn the_odm_2_structure_in_a_1_3_file_is_refused() {
    for body in [
        r#"<Study OID="S"><MetaDataVersion OID="M"><StudyEventDef OID="SE"><ItemGroupRef ItemGroupOID="IG"/></StudyEventDef></MetaDataVersion></Study>"#,
        r#"<Study OID="S"><MetaDataVersion OID="M"><ItemGroupDef OID="IG" Repeating="No"><ItemGroupRef ItemGroupOID="IG2"/></ItemGroupDef></MetaDataVersion></Study>"#,
        r#"<Study OID="S"><ClinicalData StudyOID="S"/></Study>"#,
    ] {
        match refusal(&odm(body)) {
            MetadataError::File(e) => assert_eq!(e.kind, Refusal::Odm2Structure, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    // Near miss: an ItemGroupRef where ODM 1.3 has it (in a FormDef) is read.
    let ok = odm(
        r#"<Study OID="S"><MetaDataVersion OID="M"><FormDef OID="F"><ItemGroupRef ItemGroupOID="IG"/></FormDef></MetaDataVersion></Study>"#,
    );
    assert_eq!(
        md(ok.as_bytes()).studies[0].versions[0].forms[0].groups[0].oid,
        "IG"
    );
}

#[test]
fn the_xml_readers_refusals_and_a_bad_file_type_refuse_the_metadata() {
    let doctype = format!("<!DOCTYPE ODM SYSTEM \"x.dtd\">{}", odm(""));
    match refusal(&doctype) {
        MetadataError::File(e) => assert_eq!(e.kind, Refusal::Doctype),
        other => panic!("{other:?}"),
    }
    let bad_type = format!(r#"<ODM xmlns="{ODM13_NS}" FileType="Draft"/>"#);
    match refusal(&bad_type) {
        MetadataError::File(e) => assert_eq!(e.kind, Refusal::FileType),
        other => panic!("{other:?}"),
    }
    // What follows the metadata is read too: a broken ClinicalData refuses the file.
    let broken = format!(
        r#"<ODM xmlns="{ODM13_NS}"><Study OID="S"/><ClinicalData StudyOID="S"><SubjectData></ClinicalData></ODM>"#
    );
    assert!(matches!(refusal(&broken), MetadataError::File(_)));
}

#[test]
fn metadata_larger_than_the_cap_is_refused_while_reading() {
    let items: String = (0..200)
        .map(|i| format!(r#"<ItemDef OID="I.{i}" Name="Item number {i}" DataType="text"/>"#))
        .collect();
    let doc = odm(&format!(
        r#"<Study OID="S"><MetaDataVersion OID="M">{items}</MetaDataVersion></Study>"#
    ));
    assert!(read_capped(doc.as_bytes(), Limits::default(), 1_000_000).is_ok());
    match read_capped(doc.as_bytes(), Limits::default(), 10_000) {
        Err(MetadataError::TooLarge { cap, at }) => {
            assert_eq!(cap, 10_000);
            assert_eq!(at.line, 1);
            // Refused part-way, not after reading the whole document.
            assert!(at.column < doc.len() as u64 / 2, "{at}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_without_metadata_reads_as_empty() {
    let md = md(odm(r#"<ClinicalData StudyOID="S" MetaDataVersionOID="M"/>"#).as_bytes());
    assert!(md.studies.is_empty());
    assert_eq!(md.clinical_data, 1);
}
