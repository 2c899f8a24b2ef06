//! Whole conversions of the hand-written fixtures (`tests/data/odm`): what each becomes, what is
//! listed, the choice of the metadata version, sites and visits, and that the YAML printed is
//! what the protocol loader accepts.

use std::collections::BTreeMap;

use super::*;
use crate::protocol::file::FormFile;
use crate::protocol::{CodeType, Codes, ItemType};

const CDISC: &[u8] = include_bytes!("../../../tests/data/odm/cdisc-metadata.xml");
const REDCAP: &[u8] = include_bytes!("../../../tests/data/odm/redcap-metadata.xml");
const OPENCLINICA: &[u8] = include_bytes!("../../../tests/data/odm/openclinica-metadata.xml");
const VERSIONS: &[u8] = include_bytes!("../../../tests/data/odm/two-versions.xml");

pub(super) fn run(doc: &[u8], opts: &Options) -> Result<Conversion, Refused> {
    from_odm(doc, Limits::default(), opts)
}

pub(super) fn ok(doc: &[u8], opts: &Options) -> Conversion {
    run(doc, opts).unwrap_or_else(|e| panic!("refused: {e}"))
}

fn site_visit() -> Options {
    Options {
        sites: vec!["SITE-01".into()],
        visit: Some("VISIT-01".into()),
        ..Options::default()
    }
}

/// The stderr lines as printed.
pub(super) fn printed(c: &Conversion) -> Vec<String> {
    c.lines.iter().map(|l| l.to_string()).collect()
}

pub(super) fn has(c: &Conversion, line: &str) -> bool {
    printed(c).iter().any(|l| l == line)
}

fn form<'a>(c: &'a Conversion, oid: &str) -> &'a FormFile {
    c.protocol.forms.get(oid).expect(oid)
}

#[test]
fn a_cdisc_study_becomes_a_protocol_with_its_visits_sites_forms_and_groups() {
    let c = ok(CDISC, &Options::default());
    let p = &c.protocol;
    assert_eq!(p.study, "ST.CARDIO");
    assert_eq!(p.version, "MDV.CARDIO.2");
    assert_eq!(p.title.as_deref(), Some("Cardio Test Study"));
    assert_eq!(p.visits, ["SE.SCREEN", "SE.WEEK4", "SE.AE"]);
    assert_eq!(p.sites, ["LOC.SITE.01", "LOC.SITE.02"]);
    assert!(p.odm.is_none());
    let forms: Vec<&str> = p.forms.keys().map(String::as_str).collect();
    assert_eq!(forms, ["F.AE", "F.DM", "F.VS"]);
    // The repeating group keeps its OID; the others' items are the form's.
    let ae = form(&c, "F.AE");
    assert_eq!(ae.title.as_deref(), Some("Adverse events"));
    assert_eq!(ae.items.keys().collect::<Vec<_>>(), ["I.AEYN"]);
    let log = &ae.groups["IG.AE"];
    assert_eq!(log.label.as_deref(), Some("Adverse event log"));
    assert_eq!(
        log.items.keys().collect::<Vec<_>>(),
        ["I.AEDUR", "I.AEGRADE", "I.AESEV", "I.AESTDT", "I.AETERM"]
    );
    // The checks of a group item run per row.
    let ids: Vec<&str> = log.checks.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["I.AESEV.RC1", "I.AESEV.RC2", "I.AESEV.RC3"]);
    assert!(form(&c, "F.VS").groups.is_empty());
    // An item in two non-repeating groups of a form is one item, required if either says so.
    assert!(form(&c, "F.VS").items["I.SYSBP"].required);
    assert_eq!(c.counts.forms, 3);
    assert_eq!(c.counts.groups, 1);
    assert_eq!(c.counts.items, 20);
    assert_eq!(c.counts.item_defs, 20);
    assert_eq!(c.counts.visits, 3);
    assert_eq!(c.counts.sites, 2);
    assert_eq!(c.counts.phi, 2);
    assert_eq!(c.counts.flipped, 1);
    // The YAML starts with what it is, then loads as it was made.
    assert!(
        c.yaml
            .starts_with("# Study protocol converted from CDISC ODM")
    );
    let back: ProtocolFile = serde_saphyr::from_str(&c.yaml).unwrap();
    assert_eq!(&back, p);
}

#[test]
fn what_the_protocol_cannot_say_is_listed() {
    let c = ok(CDISC, &Options::default());
    for line in [
        "note: Location LOC.LAB is of type Lab: not taken as a site",
        "not converted: ConditionDefs (collection exception conditions are not checked): COND.NOAE",
        "not converted: MethodDefs (computations and imputations are not run): MT.DIA",
        "not converted: items computed by a MethodDef (the method is not run): I.DIABP (MT.DIA)",
        "not converted: items Mandatory under a CollectionExceptionCondition (not made required: the condition is not checked): I.AESEV",
        "not converted: item groups collected under a CollectionExceptionCondition (the condition is not checked): F.AE/IG.AE",
        "not converted: texts in other languages (fr, de): questions, decodes and messages keep the English text, else the first",
        "not converted: item I.TEMP: RangeCheck 2 is a FormalExpression",
        "not converted: item I.WEIGHT: RangeCheck 2 applies to values in unit MU.KG only: the protocol's ranges and checks do not depend on the unit",
        "not converted: DataType URI has no type in the protocol: made text items: I.XRAY",
        "not converted: DataType durationDatetime has no type in the protocol: made text items: I.AEDUR",
        "not converted: item I.COUNTRY: CodeList CL.ISO3166 refers to the external dictionary ISO3166: its codes are not in the file, so the item keeps its own type",
        "not converted: CodeList CL.GRADE: code 1 is listed twice (as integer codes): kept once",
        "not converted: the code lists of boolean items (their labels of true and false): I.AEYN",
        "note: ItemDefs no item group refers to (not converted): I.UNUSED",
        "note: items that accept several units (units: a value must state one of them): I.WEIGHT",
        "note: item I.AESEV: its range checks cannot all hold as the conditions valid data meets (ODM 1.3.2); read as the conditions data fails instead: review them",
        "note: AdminData: 1 users and 1 signature definitions not kept (the protocol names no users)",
        "note: which forms each study event holds (FormRef) is not kept: a form is accepted at any visit",
    ] {
        assert!(has(&c, line), "missing: {line}\n{:#?}", printed(&c));
    }
    // Every line has one of the three prefixes; the summary is last.
    for l in printed(&c) {
        assert!(
            l.starts_with("phi: ") || l.starts_with("not converted: ") || l.starts_with("note: "),
            "{l}"
        );
    }
    let last = printed(&c).pop().unwrap();
    assert_eq!(
        last,
        "note: converted Study ST.CARDIO metadata version MDV.CARDIO.2: 3 forms, 1 repeating \
         groups, 20 items (20 ItemDefs), 3 visits, 2 sites; 2 phi guesses, 13 not converted; the \
         range checks of 1 of 6 items read as failing conditions"
    );
    assert_eq!(c.counts.not_converted, 13);
}

#[test]
fn a_redcap_project_needs_a_site_and_a_visit_and_gets_its_identifiers_as_phi() {
    assert_eq!(
        run(REDCAP, &Options::default()).err(),
        Some(Refused::NoSitesNorVisits)
    );
    let only_site = Options {
        sites: vec!["SITE-01".into()],
        ..Options::default()
    };
    assert_eq!(run(REDCAP, &only_site).err(), Some(Refused::NoVisits));
    let only_visit = Options {
        visit: Some("VISIT-01".into()),
        ..Options::default()
    };
    assert_eq!(run(REDCAP, &only_visit).err(), Some(Refused::NoSites));
    let c = ok(REDCAP, &site_visit());
    let p = &c.protocol;
    assert_eq!(p.sites, ["SITE-01"]);
    assert_eq!(p.visits, ["VISIT-01"]);
    let odm = p.odm.as_ref().unwrap();
    assert_eq!(odm.default_site.as_deref(), Some("SITE-01"));
    assert_eq!(odm.default_visit.as_deref(), Some("VISIT-01"));
    let enrolment = form(&c, "Form.enrolment");
    let phi: Vec<&str> = enrolment
        .items
        .iter()
        .filter(|(_, i)| i.phi)
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        phi,
        [
            "birthdate",
            "consent_scan",
            "family_name",
            "given_name",
            "home_street",
            "mail",
            "mobile"
        ]
    );
    for line in [
        "phi: item given_name: REDCap marks it an identifier (redcap:Identifier)",
        "phi: item family_name: its Name family_name looks like a person's name",
        "phi: item home_street: its Name home_street looks like an address",
        "phi: item mobile: REDCap validates it as a phone number",
        "phi: item mail: REDCap validates it as an e-mail address",
        "phi: item birthdate: its Name birthdate looks like a birth date",
        "phi: item consent_scan: a REDCap file upload (a document's name may identify a person)",
        "not converted: REDCap branching logic (when an item is asked: not checked): packs_per_day",
        "not converted: REDCap calculated fields (the calculation is not run): bmi",
        "not converted: the code lists of boolean items (their labels of true and false): smoker, diet___1, diet___2",
        "note: item redcap_data_access_group holds each record's REDCap data access group (what REDCap has for sites): its data names no SiteRef, so give --site, or one site per group by hand",
        "note: item record_id repeats each record's SubjectKey (REDCap's record id): if subject keys identify patients (odm.subject_key: pseudonymise), make it phi: true too",
    ] {
        assert!(has(&c, line), "missing: {line}\n{:#?}", printed(&c));
    }
    // Not every name is a person's.
    assert!(!enrolment.items["medication_name"].phi);
    assert!(!enrolment.items["record_id"].phi);
    // Checkboxes are booleans; REDCap's status is a text code list with labels.
    assert_eq!(enrolment.items["diet___1"].kind, ItemType::Boolean);
    let status = &enrolment.items["enrolment_complete"];
    assert_eq!(status.kind, ItemType::Code);
    assert_eq!(
        status.codes,
        Some(Codes::labelled([
            ("0", "Incomplete"),
            ("1", "Unverified"),
            ("2", "Complete")
        ]))
    );
    assert_eq!(status.code_type, None);
    let log = form(&c, "Form.visit_log");
    assert_eq!(log.items["visit_date"].kind, ItemType::PartialDatetime);
    assert!(log.items["visit_date"].required);
    assert_eq!(log.items["weight_kg"].range, Some([2.5, 400.0]));
    assert_eq!(log.items["weight_kg"].max_length, None);
    assert_eq!(enrolment.items["packs_per_day"].range, Some([0.0, 10.0]));
}

#[test]
fn an_openclinica_parent_study_takes_its_site_studies_as_sites() {
    let refused = run(OPENCLINICA, &Options::default()).err().unwrap();
    assert_eq!(
        refused.to_string(),
        "the file holds 3 metadata versions: choose one with --metadata-version OID: v1.0.0 \
         (Study S_ONCO), v1.0.0-S_ONCO_SITE1 (Study S_ONCO_SITE1, includes v1.0.0), \
         v1.0.0-S_ONCO_SITE2 (Study S_ONCO_SITE2, includes v1.0.0)"
    );
    let opts = Options {
        metadata_version: Some("v1.0.0".into()),
        ..Options::default()
    };
    let c = ok(OPENCLINICA, &opts);
    assert_eq!(c.protocol.sites, ["S_ONCO_SITE1", "S_ONCO_SITE2"]);
    assert_eq!(c.protocol.visits, ["SE_BASELINE", "SE_CYCLE"]);
    assert!(has(
        &c,
        "note: Study S_ONCO_SITE1 includes this metadata version: taken as a site (an OpenClinica site study: its ClinicalData name it as StudyOID)"
    ));
    assert!(has(
        &c,
        "phi: item I_PATIE_HOSPNUM: the source system flags it as PHI (PHI=\"Yes\")"
    ));
    assert!(has(
        &c,
        "phi: item I_PATIE_INITIALS: its Name PTINIT looks like initials"
    ));
    let patient = form(&c, "F_PATIENT_V1");
    let temp = &patient.items["I_PATIE_TEMP"];
    assert_eq!(temp.hard_range, Some([34.0, 43.0]));
    assert_eq!(temp.unit.as_deref(), Some("MU_CELSIUS"));
    assert_eq!((temp.digits, temp.fraction_digits), (Some(25), Some(1)));
    let ecog = &patient.items["I_PATIE_ECOG"];
    assert_eq!(ecog.code_type, Some(CodeType::Integer));
    assert!(ecog.required);
    let doses = &form(&c, "F_DOSING_V2").groups["IG_DOSIN_DOSES"];
    assert_eq!(doses.checks[0].assert, "I_DOSIN_DOSE > 0.0");
    assert!(doses.checks[0].hard);
    // A site's own metadata version includes the parent's: not followed, and said so.
    let site = Options {
        metadata_version: Some("v1.0.0-S_ONCO_SITE2".into()),
        sites: vec!["S_ONCO_SITE2".into()],
        visit: Some("SE_BASELINE".into()),
    };
    let c = ok(OPENCLINICA, &site);
    assert!(c.protocol.forms.is_empty());
    assert!(has(
        &c,
        "not converted: metadata version v1.0.0-S_ONCO_SITE2 includes Study S_ONCO metadata version v1.0.0: not followed (its definitions are not converted; convert that one with --metadata-version)"
    ));
}

#[test]
fn the_metadata_version_is_chosen_or_the_file_refused_with_the_list() {
    match run(VERSIONS, &Options::default()) {
        Err(Refused::SeveralVersions { count, list }) => {
            assert_eq!(count, 3);
            assert_eq!(
                list,
                "MDV.1 (Study ST.A), MDV.2 (Study ST.A), MDV.1 (Study ST.B)"
            );
        }
        other => panic!("{:?}", other.err()),
    }
    let pick = |oid: &str| Options {
        metadata_version: Some(oid.into()),
        ..Options::default()
    };
    let c = ok(VERSIONS, &pick("MDV.2"));
    assert_eq!(c.protocol.version, "MDV.2");
    assert_eq!(c.protocol.forms.keys().collect::<Vec<_>>(), ["F.TWO"]);
    // Only the chosen study's locations are its sites.
    assert_eq!(c.protocol.sites, ["LOC.A1"]);
    assert!(matches!(
        run(VERSIONS, &pick("MDV.9")),
        Err(Refused::NoSuchVersion { .. })
    ));
    match run(VERSIONS, &pick("MDV.1")) {
        Err(Refused::Ambiguous { studies, .. }) => assert_eq!(studies, "ST.A, ST.B"),
        other => panic!("{:?}", other.err()),
    }
    let none = format!(
        r#"<ODM xmlns="{}" ODMVersion="1.3.2"/>"#,
        crate::odm::xml::ODM13_NS
    );
    assert_eq!(
        run(none.as_bytes(), &Options::default()).err(),
        Some(Refused::NoMetadata)
    );
}

#[test]
fn site_and_visit_options_are_added_to_what_the_file_names() {
    let opts = Options {
        sites: vec!["LOC.SITE.02".into(), "EXTRA".into()],
        visit: Some("SE.UNSCHEDULED".into()),
        ..Options::default()
    };
    let c = ok(CDISC, &opts);
    assert_eq!(c.protocol.sites, ["LOC.SITE.01", "LOC.SITE.02", "EXTRA"]);
    assert_eq!(
        c.protocol.visits,
        ["SE.SCREEN", "SE.WEEK4", "SE.AE", "SE.UNSCHEDULED"]
    );
    let odm = c.protocol.odm.unwrap();
    assert_eq!(odm.default_site.as_deref(), Some("LOC.SITE.02"));
    assert_eq!(odm.default_visit.as_deref(), Some("SE.UNSCHEDULED"));
}

#[test]
fn every_fixture_converts_to_yaml_the_protocol_loader_accepts_unchanged() {
    let cases: [(&[u8], Options); 4] = [
        (CDISC, Options::default()),
        (REDCAP, site_visit()),
        (
            OPENCLINICA,
            Options {
                metadata_version: Some("v1.0.0".into()),
                ..Options::default()
            },
        ),
        (
            VERSIONS,
            Options {
                metadata_version: Some("MDV.2".into()),
                ..Options::default()
            },
        ),
    ];
    for (doc, opts) in cases {
        let c = ok(doc, &opts);
        let loaded = Protocol::parse(&c.yaml).unwrap_or_else(|e| panic!("{e:?}\n{}", c.yaml));
        assert_eq!(loaded.study, c.protocol.study);
        let forms: BTreeMap<_, _> = loaded
            .forms
            .iter()
            .map(|(k, f)| (k, f.items.len()))
            .collect();
        let made: BTreeMap<_, _> = c
            .protocol
            .forms
            .iter()
            .map(|(k, f)| (k, f.items.len()))
            .collect();
        assert_eq!(forms, made);
    }
}

/// Found by the `study_from_odm` fuzz target: a MetaDataVersion without an OID became a protocol
/// without a version, which the converter then called its own bug.
#[test]
fn a_study_or_metadata_version_without_an_oid_is_refused_as_such() {
    let text = std::str::from_utf8(REDCAP).unwrap();
    let no_mdv = text.replacen("<MetaDataVersion OID=", "<MetaDataVersion X=", 1);
    assert_eq!(
        run(no_mdv.as_bytes(), &site_visit()).err(),
        Some(Refused::NoOid("MetaDataVersion"))
    );
    let no_study = text.replacen("<Study OID=", "<Study X=", 1);
    assert_eq!(
        run(no_study.as_bytes(), &site_visit()).err(),
        Some(Refused::NoOid("Study"))
    );
}
