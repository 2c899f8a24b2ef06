//! `edc-ingest study from-odm FILE`: the study protocol (the YAML the daemon loads) converted from
//! one MetaDataVersion of a CDISC ODM file, with what a person must review on stderr.
//!
//! `study` is the Study OID, `version` the MetaDataVersion OID, `title` the StudyName. Visits are
//! the StudyEventDef OIDs (in the order of the Protocol's StudyEventRefs, then the others); sites
//! the AdminData Locations of the study (those of type Site or without type), and the Studies
//! whose MetaDataVersion `Include`s the one converted (OpenClinica's site studies). `--site` and
//! `--visit` name what the file does not say (REDCap has no sites and, in classic projects, no
//! events): they are added to `sites` / `visits` and become `odm.default_site` (the first
//! `--site`) / `odm.default_visit`. A file with no site and no `--site`, or no visit and no
//! `--visit`, is refused with a message saying so. Forms, groups and items: `forms`, `items`,
//! range checks `ranges`, PHI guesses `phi`, the lines on stderr [`report`].
//!
//! The YAML printed is loaded back with the protocol loader `check-config` and the daemon use
//! before it is printed: what this prints, they accept unchanged (a failure there is a bug of the
//! converter, reported as such, and nothing is printed).

mod forms;
mod items;
mod phi;
mod ranges;
pub mod report;
mod summary;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_checks;
#[cfg(test)]
mod tests_items;

use std::collections::HashMap;
use std::io::BufRead;

use crate::odm::metadata::{self, MetaDataVersion, Metadata, MetadataError, Study};
use crate::odm::xml::Limits;
use crate::printable::printable;
use crate::protocol::file::ProtocolFile;
use crate::protocol::{OdmSettings, Protocol};
pub use report::{Kind, Line};
use report::{Report, shown};

/// What the command line says besides the file.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The MetaDataVersion to convert (required when the file has several).
    pub metadata_version: Option<String>,
    /// Sites the file does not name; the first is `odm.default_site`.
    pub sites: Vec<String>,
    /// The visit of forms whose document names no study event: `odm.default_visit`.
    pub visit: Option<String>,
}

/// A converted protocol.
pub struct Conversion {
    pub protocol: ProtocolFile,
    /// The YAML to print (header comments, then the protocol).
    pub yaml: String,
    /// The lines for stderr, the summary last.
    pub lines: Vec<Line>,
    pub counts: Counts,
}

/// What a conversion came to, for the summary and the tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub forms: usize,
    pub groups: usize,
    pub items: usize,
    pub item_defs: usize,
    pub visits: usize,
    pub sites: usize,
    pub phi: usize,
    pub not_converted: usize,
    /// Items whose range checks were read as failing conditions.
    pub flipped: usize,
}

/// Why nothing is printed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Read(#[from] MetadataError),
    #[error(
        "the file holds no study metadata (no Study with a MetaDataVersion): nothing to convert"
    )]
    NoMetadata,
    #[error(
        "the file holds {count} metadata versions: choose one with --metadata-version OID: {list}"
    )]
    SeveralVersions { count: usize, list: String },
    #[error("the file has no metadata version {wanted}; it has: {list}")]
    NoSuchVersion { wanted: String, list: String },
    #[error("metadata version {wanted} is defined in several studies ({studies}): not converted")]
    Ambiguous { wanted: String, studies: String },
    #[error(
        "the metadata names no site (no AdminData Location, no site study): give the site its forms come from with --site SITE"
    )]
    NoSites,
    #[error(
        "the metadata defines no study event (StudyEventDef): give the visit its forms belong to with --visit VISIT"
    )]
    NoVisits,
    #[error(
        "the metadata names no site and defines no study event: give the site its forms come from with --site SITE and the visit they belong to with --visit VISIT"
    )]
    NoSitesNorVisits,
    /// The Study or the MetaDataVersion has no OID, which the protocol's `study` or `version` is.
    #[error(
        "the {0} to convert has no OID (the protocol's study is the Study OID, its version the MetaDataVersion OID): nothing to convert"
    )]
    NoOid(&'static str),
    /// The converter's own bug: what it made is not a valid protocol.
    #[error("the protocol converted is not valid (a bug of study from-odm; please report it): {0}")]
    Invalid(String),
}

/// Reads the metadata of an ODM document and converts it.
pub fn from_odm<R: BufRead>(
    input: R,
    limits: Limits,
    opts: &Options,
) -> Result<Conversion, Refused> {
    let md = metadata::read(input, limits)?;
    convert(&md, opts)
}

/// Converts the metadata version `opts` names (or the only one).
pub fn convert(md: &Metadata, opts: &Options) -> Result<Conversion, Refused> {
    let (study, mdv) = choose(md, opts.metadata_version.as_deref())?;
    if study.oid.trim().is_empty() {
        return Err(Refused::NoOid("Study"));
    }
    if mdv.oid.trim().is_empty() {
        return Err(Refused::NoOid("MetaDataVersion"));
    }
    let mut report = Report::default();
    let mut counts = forms::Counts::default();
    for include in &mdv.includes {
        report.not_converted(format!(
            "metadata version {} includes Study {} metadata version {}: not followed (its \
             definitions are not converted; convert that one with --metadata-version)",
            shown(&mdv.oid),
            shown(&include.study_oid),
            shown(&include.metadata_version_oid)
        ));
    }
    let form_files = forms::convert(mdv, &mut report, &mut counts);
    let (visits, sites) = match (
        visits(mdv, opts, &mut report),
        sites(md, study, mdv, opts, &mut report),
    ) {
        (Ok(v), Ok(s)) => (v, s),
        (Err(_), Err(_)) => return Err(Refused::NoSitesNorVisits),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let odm = (!opts.sites.is_empty() || opts.visit.is_some()).then(|| OdmSettings {
        default_site: opts.sites.first().cloned(),
        default_visit: opts.visit.clone(),
        ..OdmSettings::default()
    });
    summary::notes(md, study, mdv, &mut report);
    let protocol = ProtocolFile {
        study: study.oid.clone(),
        version: mdv.oid.clone(),
        title: study.name.clone().or_else(|| study.protocol_name.clone()),
        odm,
        sites,
        visits,
        forms: form_files,
        ..ProtocolFile::default()
    };
    let c = Counts {
        forms: protocol.forms.len(),
        groups: counts.groups,
        items: counts.items,
        item_defs: counts.item_defs,
        visits: protocol.visits.len(),
        sites: protocol.sites.len(),
        phi: report.count(Kind::Phi),
        not_converted: report.count(Kind::NotConverted),
        flipped: counts.flipped,
    };
    summary::last(study, mdv, &c, counts.range_checked, &mut report);
    let yaml = yaml(&protocol)?;
    Ok(Conversion {
        protocol,
        yaml,
        lines: report.lines(),
        counts: c,
    })
}

/// The protocol as YAML, checked by the loader check-config uses.
fn yaml(protocol: &ProtocolFile) -> Result<String, Refused> {
    let body = serde_saphyr::to_string(protocol).map_err(|e| Refused::Invalid(e.to_string()))?;
    let yaml = format!(
        "# Study protocol converted from CDISC ODM by `edc-ingest study from-odm`:\n\
         # Study {}, MetaDataVersion {}. Forms, groups and items keep their ODM OIDs as names.\n\
         # Review the phi: guesses and the lines it printed on stderr before putting it in force.\n\
         {body}",
        printable(&protocol.study),
        printable(&protocol.version),
    );
    Protocol::parse(&yaml).map_err(|problems| Refused::Invalid(problems.join("; ")))?;
    Ok(yaml)
}

/// The metadata version to convert.
fn choose<'a>(
    md: &'a Metadata,
    wanted: Option<&str>,
) -> Result<(&'a Study, &'a MetaDataVersion), Refused> {
    let all: Vec<(&Study, &MetaDataVersion)> = md
        .studies
        .iter()
        .flat_map(|s| s.versions.iter().map(move |v| (s, v)))
        .collect();
    let list = || {
        all.iter()
            .map(|(s, v)| {
                let included = v
                    .includes
                    .first()
                    .map(|i| format!(", includes {}", shown(&i.metadata_version_oid)))
                    .unwrap_or_default();
                format!("{} (Study {}{included})", shown(&v.oid), shown(&s.oid))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (wanted, all.as_slice()) {
        (_, []) => Err(Refused::NoMetadata),
        (None, [one]) => Ok(*one),
        (None, _) => Err(Refused::SeveralVersions {
            count: all.len(),
            list: list(),
        }),
        (Some(oid), _) => {
            let found: Vec<_> = all.iter().filter(|(_, v)| v.oid == oid).collect();
            match found.as_slice() {
                [] => Err(Refused::NoSuchVersion {
                    wanted: printable(oid),
                    list: list(),
                }),
                [one] => Ok(**one),
                several => Err(Refused::Ambiguous {
                    wanted: printable(oid),
                    studies: several
                        .iter()
                        .map(|(s, _)| shown(&s.oid))
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        }
    }
}

/// Visits: the Protocol's StudyEventRefs in order, the other StudyEventDefs, then `--visit`.
fn visits(
    mdv: &MetaDataVersion,
    opts: &Options,
    report: &mut Report,
) -> Result<Vec<String>, Refused> {
    let defined: HashMap<&str, _> = mdv.events.iter().map(|e| (e.oid.as_str(), e)).collect();
    let mut visits: Vec<String> = Vec::new();
    for r in &mdv.protocol {
        if !defined.contains_key(r.oid.as_str()) {
            report.not_converted(format!(
                "the Protocol's StudyEventRef names {}, which the metadata version does not define",
                shown(&r.oid)
            ));
        } else if !visits.contains(&r.oid) {
            visits.push(r.oid.clone());
        }
        if r.condition.is_some() {
            report.group(
                Kind::NotConverted,
                "study events under a CollectionExceptionCondition (the condition is not checked)",
                shown(&r.oid),
            );
        }
    }
    for e in &mdv.events {
        if e.oid.is_empty() {
            report.not_converted("a StudyEventDef without OID".into());
        } else if !visits.contains(&e.oid) {
            visits.push(e.oid.clone());
        }
    }
    if let Some(v) = &opts.visit
        && !visits.contains(v)
    {
        visits.push(v.clone());
    }
    if visits.is_empty() {
        return Err(Refused::NoVisits);
    }
    Ok(visits)
}

/// Sites: Locations of the study, site studies including this version, then `--site`.
fn sites(
    md: &Metadata,
    study: &Study,
    mdv: &MetaDataVersion,
    opts: &Options,
    report: &mut Report,
) -> Result<Vec<String>, Refused> {
    let mut sites: Vec<String> = Vec::new();
    let admin = md
        .admin
        .iter()
        .filter(|a| a.study_oid.as_deref().is_none_or(|s| s == study.oid));
    for loc in admin.flat_map(|a| &a.locations) {
        match loc.kind.as_deref() {
            _ if loc.oid.is_empty() => report.not_converted("a Location without OID".into()),
            None | Some("Site") => {
                if !sites.contains(&loc.oid) {
                    sites.push(loc.oid.clone());
                }
            }
            Some(other) => report.note(format!(
                "Location {} is of type {}: not taken as a site",
                shown(&loc.oid),
                shown(other)
            )),
        }
    }
    for other in md.studies.iter().filter(|s| s.oid != study.oid) {
        let includes = other.versions.iter().any(|v| {
            v.includes
                .iter()
                .any(|i| i.study_oid == study.oid && i.metadata_version_oid == mdv.oid)
        });
        if includes && !other.oid.is_empty() && !sites.contains(&other.oid) {
            report.note(format!(
                "Study {} includes this metadata version: taken as a site (an OpenClinica site \
                 study: its ClinicalData name it as StudyOID)",
                shown(&other.oid)
            ));
            sites.push(other.oid.clone());
        }
    }
    for s in &opts.sites {
        if !sites.contains(s) {
            sites.push(s.clone());
        }
    }
    if sites.is_empty() {
        return Err(Refused::NoSites);
    }
    Ok(sites)
}

/// White space runs as one space, trimmed.
fn tidy(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
