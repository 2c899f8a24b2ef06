//! The lines about the file as a whole: what it holds that the protocol has no place for
//! (conditions, methods, other languages, vendor extensions, documentation, users, clinical
//! data), how some parts were read, and the summary line, last.

use std::collections::BTreeMap;

use crate::odm::metadata::{MetaDataVersion, Metadata, Study, Text};

use super::Counts;
use super::report::{Kind, Report, shown};

/// Vendor attributes `study from-odm` reads (by local name), for the extension summary.
const READ: &[&str] = &[
    "Identifier",
    "FieldType",
    "TextValidationType",
    "BranchingLogic",
    "Calculation",
    "RecordIdField",
    "PHI",
];

pub(super) fn notes(md: &Metadata, study: &Study, mdv: &MetaDataVersion, report: &mut Report) {
    for c in &mdv.conditions {
        report.group(
            Kind::NotConverted,
            "ConditionDefs (collection exception conditions are not checked)",
            shown(&c.oid),
        );
    }
    for m in &mdv.methods {
        report.group(
            Kind::NotConverted,
            "MethodDefs (computations and imputations are not run)",
            shown(&m.oid),
        );
    }
    languages(study, mdv, report);
    if mdv.events.iter().any(|e| !e.forms.is_empty()) {
        report.note(
            "which forms each study event holds (FormRef) is not kept: a form is accepted at any \
             visit"
                .into(),
        );
    }
    let mandatory = mdv.protocol.iter().any(|r| r.mandatory)
        || mdv
            .events
            .iter()
            .flat_map(|e| &e.forms)
            .any(|r| r.mandatory)
        || mdv
            .forms
            .iter()
            .flat_map(|f| &f.groups)
            .any(|r| r.mandatory);
    if mandatory {
        report.note(
            "Mandatory on StudyEventRef, FormRef and ItemGroupRef is not kept: the protocol \
             requires items (ItemRef Mandatory), not forms or groups"
                .into(),
        );
    }
    let repeating = mdv
        .events
        .iter()
        .any(|e| e.repeating.as_deref() == Some("Yes"))
        || mdv
            .forms
            .iter()
            .any(|f| f.repeating.as_deref() == Some("Yes"));
    if repeating {
        report.note(
            "repeating study events and forms need nothing in the protocol: their repeat keys are \
             part of each record's identity"
                .into(),
        );
    }
    let used: std::collections::HashSet<&str> = mdv
        .groups
        .iter()
        .flat_map(|g| &g.items)
        .map(|r| r.oid.as_str())
        .collect();
    for item in mdv.items.iter().filter(|i| !used.contains(i.oid.as_str())) {
        report.group(
            Kind::Note,
            "ItemDefs no item group refers to (not converted)",
            shown(&item.oid),
        );
    }
    let defined: Vec<&str> = study.units.iter().map(|u| u.oid.as_str()).collect();
    for unit in mdv.items.iter().flat_map(|i| &i.units) {
        if !defined.contains(&unit.as_str()) {
            report.group(
                Kind::Note,
                "units the study's BasicDefinitions do not define (kept by OID)",
                shown(unit),
            );
        }
    }
    if let Some(field) = mdv
        .vendor
        .iter()
        .find(|a| a.local == "RecordIdField" && a.ns.contains("projectredcap"))
    {
        report.note(format!(
            "item {} repeats each record's SubjectKey (REDCap's record id): if subject keys \
             identify patients (odm.subject_key: pseudonymise), make it phi: true too",
            shown(&field.value)
        ));
    }
    if mdv
        .items
        .iter()
        .any(|i| i.oid == "redcap_data_access_group")
    {
        report.note(
            "item redcap_data_access_group holds each record's REDCap data access group (what \
             REDCap has for sites): its data names no SiteRef, so give --site, or one site per \
             group by hand"
                .into(),
        );
    }
    extensions(md, mdv, report);
    if !md.documentation.is_empty() {
        let counts: Vec<String> = md
            .documentation
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        report.note(format!(
            "not kept (documentation and presentation, in the whole file): {}",
            counts.join(", ")
        ));
    }
    let users: usize = md.admin.iter().map(|a| a.users.len()).sum();
    let signatures: u64 = md.admin.iter().map(|a| a.signature_defs).sum();
    if users > 0 || signatures > 0 {
        report.note(format!(
            "AdminData: {users} users and {signatures} signature definitions not kept (the \
             protocol names no users)"
        ));
    }
    if md.clinical_data > 0 || md.reference_data > 0 {
        report.note(format!(
            "{} ClinicalData and {} ReferenceData blocks read past (their data is imported with \
             `edc-ingest odm import`)",
            md.clinical_data, md.reference_data
        ));
    }
    report.note(
        "the protocol has no period (effective_from, effective_to): beside another version of \
         this study in studies_dir, give each version its period"
            .into(),
    );
    if !study.units.is_empty() {
        report.note(
            "units are named by their MeasurementUnit OIDs (as ItemData name them); their symbols \
             are not kept"
                .into(),
        );
    }
}

/// One line for the languages of the texts not kept.
fn languages(study: &Study, mdv: &MetaDataVersion, report: &mut Report) {
    let texts = mdv
        .items
        .iter()
        .flat_map(|i| std::iter::once(&i.question).chain(i.range_checks.iter().map(|r| &r.message)))
        .chain(
            mdv.code_lists
                .iter()
                .flat_map(|c| c.items.iter().map(|i| &i.decode)),
        )
        .chain(study.units.iter().map(|u| &u.symbol));
    let mut langs: Vec<String> = Vec::new();
    for lang in texts.flat_map(Text::others) {
        if !langs.contains(&lang) {
            langs.push(lang);
        }
    }
    if !langs.is_empty() {
        let shown_langs: Vec<String> = langs.iter().map(|l| shown(l)).collect();
        report.not_converted(format!(
            "texts in other languages ({}): questions, decodes and messages keep the English text, \
             else the first",
            shown_langs.join(", ")
        ));
    }
}

/// One line per vendor namespace: what was read past, what was read.
fn extensions(md: &Metadata, mdv: &MetaDataVersion, report: &mut Report) {
    let mut unread: BTreeMap<&str, u64> = BTreeMap::new();
    let mut read: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let kept = mdv
        .vendor
        .iter()
        .chain(mdv.items.iter().flat_map(|i| &i.vendor));
    for a in kept {
        if READ.contains(&a.local.as_str()) {
            let names = read.entry(&a.ns).or_default();
            if !names.contains(&a.local.as_str()) {
                names.push(&a.local);
            }
        } else {
            *unread.entry(&a.ns).or_default() += 1;
        }
    }
    let mut namespaces: Vec<&str> = md
        .skipped
        .extension_elements
        .keys()
        .chain(md.skipped.extension_attributes.keys())
        .map(String::as_str)
        .chain(unread.keys().copied())
        .chain(read.keys().copied())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    for ns in namespaces {
        let elements = md.skipped.extension_elements.get(ns).copied().unwrap_or(0);
        let attributes = md
            .skipped
            .extension_attributes
            .get(ns)
            .copied()
            .unwrap_or(0)
            + unread.get(ns).copied().unwrap_or(0);
        let used = read
            .get(ns)
            .map(|n| format!(" (read: {})", n.join(", ")))
            .unwrap_or_default();
        if elements + attributes == 0 {
            continue;
        }
        report.not_converted(format!(
            "vendor extensions of namespace {}: {elements} elements and {attributes} attributes \
             read past{used}",
            shown(ns)
        ));
    }
}

/// The summary, the last line.
pub(super) fn last(
    study: &Study,
    mdv: &MetaDataVersion,
    c: &Counts,
    range_checked: usize,
    report: &mut Report,
) {
    let flipped = if c.flipped > 0 {
        format!(
            "; the range checks of {} of {range_checked} items read as failing conditions",
            c.flipped
        )
    } else if range_checked > 0 {
        format!("; the range checks of {range_checked} items read as ODM 1.3.2 defines them")
    } else {
        String::new()
    };
    report.last(
        Kind::Note,
        format!(
            "converted Study {} metadata version {}: {} forms, {} repeating groups, {} items ({} \
         ItemDefs), {} visits, {} sites; {} phi guesses, {} not converted{flipped}",
            shown(&study.oid),
            shown(&mdv.oid),
            c.forms,
            c.groups,
            c.items,
            c.item_defs,
            c.visits,
            c.sites,
            c.phi,
            c.not_converted,
        ),
    );
}
