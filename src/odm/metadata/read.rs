//! The walk over a document's metadata: the root, Study (GlobalVariables, BasicDefinitions; the
//! MetaDataVersion's definitions are [`super::defs`]'s), AdminData; what has no place in a protocol
//! counted, ClinicalData and ReferenceData read past. Every element is read whole by the function
//! that meets its start tag, so the walk stays in step whatever an element holds.

use std::io::BufRead;

use super::text::tidy;
use super::{
    AdminData, MAX_METADATA_BYTES, MeasurementUnit, Metadata, MetadataError, Study, Text,
    VendorAttr,
};
use crate::odm::model::{Position, count_ns};
use crate::odm::walk::present;
use crate::odm::xml::{FileError, Limits, Refusal, StartTag, Token, XML_NS, XmlReader};

/// XML Schema's instance namespace (`xsi:schemaLocation`): no vendor extension.
const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// What one element costs besides its strings (the struct, the vector slot).
const ELEMENT_COST: usize = 64;

/// ODM 1.3 elements of the metadata counted by name when read past (documentation and
/// presentation, with no place in a protocol); any other name is counted as `(other)`.
const DOCUMENTATION: &[&str] = &[
    "Alias",
    "ArchiveLayout",
    "Association",
    "Description",
    "ExternalQuestion",
    "FormalExpression",
    "ImputationMethod",
    "Presentation",
    "Role",
    "Signature",
    "SignatureDef",
    "StudyDescription",
];

/// A start tag, owned, so the reader can go on while its attributes are used.
pub(super) struct Head {
    pub(super) attrs: Vec<(String, String, String)>,
    pub(super) at: Position,
    pub(super) depth: usize,
}

impl Head {
    pub(super) fn of(start: &StartTag<'_>) -> Head {
        Head {
            attrs: start
                .attrs
                .iter()
                .map(|a| {
                    (
                        a.ns().to_string(),
                        a.local().to_string(),
                        a.value().to_string(),
                    )
                })
                .collect(),
            at: start.at,
            depth: start.depth,
        }
    }

    /// An unprefixed attribute, None when absent or empty.
    pub(super) fn attr(&self, local: &str) -> Option<String> {
        present(
            self.attrs
                .iter()
                .find(|(ns, l, _)| ns.is_empty() && l == local)
                .map(|(_, _, v)| v.as_str()),
        )
    }

    /// An unprefixed attribute as written ("" when absent): OIDs are kept untrimmed.
    pub(super) fn oid(&self, local: &str) -> String {
        self.attr(local).unwrap_or_default()
    }

    pub(super) fn yes(&self, local: &str) -> bool {
        self.attr(local).as_deref() == Some("Yes")
    }

    pub(super) fn bytes(&self) -> usize {
        self.attrs
            .iter()
            .map(|(a, b, c)| a.len() + b.len() + c.len())
            .sum()
    }

    /// The vendor attributes (other namespaces than none, `xml:` and `xsi:`).
    pub(super) fn vendor(&self) -> impl Iterator<Item = &(String, String, String)> {
        self.attrs
            .iter()
            .filter(|(ns, _, _)| !ns.is_empty() && ns != XML_NS && ns != XSI_NS)
    }
}

/// Reads the metadata of an ODM document (see the module's text).
pub fn read<R: BufRead>(input: R, limits: Limits) -> Result<Metadata, MetadataError> {
    read_capped(input, limits, MAX_METADATA_BYTES)
}

/// [`read`] with another cap than [`MAX_METADATA_BYTES`] (for tests).
pub(super) fn read_capped<R: BufRead>(
    input: R,
    limits: Limits,
    cap: usize,
) -> Result<Metadata, MetadataError> {
    let mut w = Walk {
        xml: XmlReader::new(input, limits),
        md: Metadata::default(),
        used: 0,
        cap,
    };
    loop {
        match w.xml.next_token()? {
            Token::Start(root) => {
                let head = Head::of(&root);
                if let Some(t) = head.attr("FileType")
                    && t != "Snapshot"
                    && t != "Transactional"
                {
                    return Err(FileError {
                        at: head.at,
                        kind: Refusal::FileType,
                    }
                    .into());
                }
                w.count_vendor(&head);
                break;
            }
            Token::Eof => return Ok(w.md),
            Token::Text(_) | Token::End { .. } => {}
        }
    }
    while let Some(start) = w.xml.next_child(1)? {
        let name = odm_name(&start);
        let head = Head::of(&start);
        match name.as_str() {
            "Study" => {
                let study = w.study(&head)?;
                w.md.studies.push(study);
            }
            "AdminData" => {
                let admin = w.admin(&head)?;
                w.md.admin.push(admin);
            }
            "ClinicalData" => {
                w.md.clinical_data += 1;
                w.xml.skip()?;
            }
            "ReferenceData" => {
                w.md.reference_data += 1;
                w.xml.skip()?;
            }
            _ => w.pass(&Passed::Odm(name))?,
        }
    }
    // Read to the end: a document the other ODM paths refuse is refused here too.
    while !matches!(w.xml.next_token()?, Token::Eof) {}
    Ok(w.md)
}

/// The local name of an ODM element; "" for another namespace.
pub(super) fn odm_name(start: &StartTag<'_>) -> String {
    if start.is_odm() {
        start.local.to_string()
    } else {
        String::new()
    }
}

/// What [`Walk::pass`] counts an element under: its ODM name ("" for an element of another
/// namespace: counted under the namespace of the start tag just read), or a namespace.
pub(super) enum Passed {
    Odm(String),
    Vendor(String),
}

pub(super) struct Walk<R: BufRead> {
    pub(super) xml: XmlReader<R>,
    pub(super) md: Metadata,
    used: usize,
    cap: usize,
}

impl<R: BufRead> Walk<R> {
    /// Counts `bytes` against the cap ([`MAX_METADATA_BYTES`]).
    pub(super) fn charge(&mut self, bytes: usize) -> Result<(), MetadataError> {
        self.used += bytes + ELEMENT_COST;
        if self.used > self.cap {
            return Err(MetadataError::TooLarge {
                cap: self.cap,
                at: self.xml.at(),
            });
        }
        Ok(())
    }

    /// Charges an element kept, and counts its vendor attributes unless they are kept.
    pub(super) fn keep(&mut self, head: &Head) -> Result<(), MetadataError> {
        self.count_vendor(head);
        self.charge(head.bytes())
    }

    pub(super) fn count_vendor(&mut self, head: &Head) {
        for (ns, _, _) in head.vendor() {
            count_ns(&mut self.md.skipped.extension_attributes, ns, 1);
        }
    }

    /// The vendor attributes of an element whose vendor attributes are kept.
    pub(super) fn vendor_of(&mut self, head: &Head) -> Result<Vec<VendorAttr>, MetadataError> {
        self.charge(head.bytes())?;
        Ok(head
            .vendor()
            .map(|(ns, local, value)| VendorAttr {
                ns: ns.clone(),
                local: local.clone(),
                value: value.clone(),
            })
            .collect())
    }

    /// Reads past the element whose start tag was just read, counting it.
    pub(super) fn pass(&mut self, what: &Passed) -> Result<(), MetadataError> {
        match what {
            Passed::Odm(name) if !name.is_empty() => {
                let key = DOCUMENTATION
                    .iter()
                    .find(|n| **n == name)
                    .copied()
                    .unwrap_or("(other)");
                *self.md.documentation.entry(key).or_default() += 1;
            }
            Passed::Odm(_) => {
                let (ns, _) = self.xml.current();
                let ns = if ns.is_empty() { "(no namespace)" } else { ns }.to_string();
                count_ns(&mut self.md.skipped.extension_elements, &ns, 1);
            }
            Passed::Vendor(ns) => count_ns(&mut self.md.skipped.extension_elements, ns, 1),
        }
        self.xml.skip()?;
        Ok(())
    }

    /// The children of the element at `depth`, each as (ODM name or "", owned start tag).
    pub(super) fn child(&mut self, depth: usize) -> Result<Option<(String, Head)>, MetadataError> {
        Ok(self
            .xml
            .next_child(depth)?
            .map(|s| (odm_name(&s), Head::of(&s))))
    }

    /// The text of the element just started (a few bytes; capped by the reader).
    pub(super) fn text(&mut self) -> Result<String, MetadataError> {
        let mut s = String::new();
        self.xml.read_text(&mut s)?;
        self.charge(s.len())?;
        Ok(s)
    }

    /// An element of TranslatedTexts (Question, Decode, ErrorMessage, Symbol).
    pub(super) fn translated(&mut self, head: &Head) -> Result<Text, MetadataError> {
        self.keep(head)?;
        let mut text = Text::default();
        while let Some((name, child)) = self.child(head.depth)? {
            if name == "TranslatedText" {
                let lang = child
                    .attrs
                    .iter()
                    .find(|(ns, l, _)| ns == XML_NS && l == "lang")
                    .map(|(_, _, v)| v.clone());
                self.count_vendor(&child);
                text.texts.push((lang, self.text()?));
            } else {
                self.pass(&Passed::Odm(name))?;
            }
        }
        Ok(text)
    }

    fn study(&mut self, head: &Head) -> Result<Study, MetadataError> {
        self.keep(head)?;
        let mut study = Study {
            oid: head.oid("OID"),
            at: head.at,
            ..Study::default()
        };
        while let Some((name, child)) = self.child(head.depth)? {
            match name.as_str() {
                "GlobalVariables" => {
                    self.keep(&child)?;
                    while let Some((name, g)) = self.child(child.depth)? {
                        match name.as_str() {
                            "StudyName" => {
                                self.count_vendor(&g);
                                study.name = Some(tidy(&self.text()?));
                            }
                            "ProtocolName" => {
                                self.count_vendor(&g);
                                study.protocol_name = Some(tidy(&self.text()?));
                            }
                            _ => self.pass(&Passed::Odm(name))?,
                        }
                    }
                }
                "BasicDefinitions" => {
                    self.keep(&child)?;
                    while let Some((name, u)) = self.child(child.depth)? {
                        if name != "MeasurementUnit" {
                            self.pass(&Passed::Odm(name))?;
                            continue;
                        }
                        self.keep(&u)?;
                        let mut unit = MeasurementUnit {
                            oid: u.oid("OID"),
                            name: u.attr("Name"),
                            ..MeasurementUnit::default()
                        };
                        while let Some((name, s)) = self.child(u.depth)? {
                            if name == "Symbol" {
                                unit.symbol = self.translated(&s)?;
                            } else {
                                self.pass(&Passed::Odm(name))?;
                            }
                        }
                        study.units.push(unit);
                    }
                }
                "MetaDataVersion" => {
                    let mdv = self.version(&child)?;
                    study.versions.push(mdv);
                }
                "ClinicalData" => {
                    return Err(FileError {
                        at: child.at,
                        kind: Refusal::Odm2Structure,
                    }
                    .into());
                }
                _ => self.pass(&Passed::Odm(name))?,
            }
        }
        Ok(study)
    }

    fn admin(&mut self, head: &Head) -> Result<AdminData, MetadataError> {
        self.keep(head)?;
        let mut admin = AdminData {
            study_oid: head.attr("StudyOID"),
            ..AdminData::default()
        };
        while let Some((name, child)) = self.child(head.depth)? {
            match name.as_str() {
                "User" => {
                    // The OID only: a user's names, address and phone are not read into memory.
                    let oid = child.oid("OID");
                    self.charge(oid.len())?;
                    self.count_vendor(&child);
                    admin.users.push(oid);
                    self.xml.skip()?;
                }
                "Location" => {
                    self.keep(&child)?;
                    admin.locations.push(super::Location {
                        oid: child.oid("OID"),
                        name: child.attr("Name"),
                        kind: child.attr("LocationType"),
                        at: child.at,
                    });
                    self.xml.skip()?;
                }
                "SignatureDef" => {
                    admin.signature_defs += 1;
                    self.xml.skip()?;
                }
                _ => self.pass(&Passed::Odm(name))?,
            }
        }
        Ok(admin)
    }
}

impl Head {
    /// An unprefixed attribute exactly as written, "" when absent (a code may be "").
    pub(super) fn attr_raw(&self, local: &str) -> String {
        self.attrs
            .iter()
            .find(|(ns, l, _)| ns.is_empty() && l == local)
            .map(|(_, _, v)| v.clone())
            .unwrap_or_default()
    }
}
