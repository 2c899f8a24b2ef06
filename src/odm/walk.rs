//! Pieces every walk over an ODM document needs (the ClinicalData reader's, the metadata
//! reader's): attribute values as ODM means them, and reading past what is not used while
//! counting it in [`Skipped`].

use std::io::BufRead;

use crate::odm::model::{Skipped, count_ns};
use crate::odm::xml::{FileError, ODM13_NS, StartTag, XmlReader};

/// An attribute's value, None when absent or empty (vendors write empty where absent is meant).
pub fn present(value: Option<&str>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(str::to_string)
}

/// Counts the vendor attributes of an element that is read.
pub fn count_attrs(start: &StartTag<'_>, skipped: &mut Skipped) {
    for attr in start.extension_attrs() {
        count_ns(&mut skipped.extension_attributes, attr.ns(), 1);
    }
}

/// ODM element names counted by name when read past; any other under `(other)`.
const ODM_ELEMENTS: &[&str] = &[
    "Study",
    "AdminData",
    "ReferenceData",
    "Association",
    "Signature",
    "Signatures",
    "Annotation",
    "Annotations",
    "AuditRecords",
    "InvestigatorRef",
    "ArchiveLayoutRef",
    "ClinicalData",
    "SubjectData",
    "StudyEventData",
    "FormData",
    "ItemGroupData",
    "ItemData",
    "AuditRecord",
    "SiteRef",
    "MeasurementUnitRef",
    "Value",
    "Comment",
    "Flag",
];

/// After the start tag just read: reads past its element and counts it.
pub fn skip_counted<R: BufRead>(
    xml: &mut XmlReader<R>,
    skipped: &mut Skipped,
) -> Result<(), FileError> {
    count_current(xml, skipped);
    xml.skip()
}

/// Counts the element whose start tag was just read as read past (the caller skips it).
pub fn count_current<R: BufRead>(xml: &XmlReader<R>, skipped: &mut Skipped) {
    let (ns, local) = xml.current();
    if ns == ODM13_NS {
        let name = ODM_ELEMENTS
            .iter()
            .find(|n| **n == local)
            .copied()
            .unwrap_or("(other)");
        *skipped.odm_elements.entry(name).or_default() += 1;
    } else if ns.is_empty() {
        count_ns(&mut skipped.extension_elements, "(no namespace)", 1);
    } else {
        count_ns(&mut skipped.extension_elements, ns, 1);
    }
}
