//! The ClinicalData reader: an ODM document in, one [`FormInstance`] at a time out.
//!
//! It walks ODM > ClinicalData > SubjectData > StudyEventData (optional: a classic single-event
//! export has FormData directly under SubjectData) > FormData, keeping the context (study and
//! metadata version, subject key and TransactionType, SiteRef, event and repeat key, the
//! AuditRecords seen so far), and reads each FormData whole into a form instance, which it yields
//! at the FormData's end. It holds one form instance at a time, at most `max_form_items` values.
//! Several ClinicalData blocks in one file are read in turn. What it does not use is read past
//! and counted ([`Skipped`]): Study, AdminData and ReferenceData (the metadata reader's),
//! Annotations, Signatures, vendor extension elements and attributes by namespace.
//!
//! A problem in one form refuses that form ([`ReadError::Form`]) and the reader goes on; a
//! problem with the document ([`ReadError::File`]: the XML reader's refusals, a Dataset-XML
//! file, the ODM 2.0 structure in a 1.3 file, a bad FileType) ends it.
//!
//! Not read: AuditRecords referred to by ID (`AuditRecordID`, out of line in `<AuditRecords>`
//! after the data: skipped and counted), and a subject's or event's AuditRecord that comes after
//! its forms (counted in [`Summary::late_audit_records`]): either would need a whole subject in
//! memory.

mod error;
mod form;

use std::io::BufRead;

use crate::odm::model::{AuditRecord, FileType, FormInstance, Position, Skipped, TransactionType};
use crate::odm::walk::{count_attrs, count_current, present, skip_counted};
use crate::odm::xml::{FileError, Limits, Refusal, StartTag, Token, XmlReader};
pub use error::{FormError, FormProblem, ReadError};

/// Counts over the whole document so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// ClinicalData blocks entered.
    pub clinical_data: u64,
    /// SubjectData elements entered.
    pub subjects: u64,
    /// Form instances yielded, and refused.
    pub forms: u64,
    pub refused: u64,
    /// Subject and study event AuditRecords that came after forms they would have applied to
    /// (against ODM's order, which puts them first): those forms were yielded without them.
    pub late_audit_records: u64,
    /// Everything read past, inside forms and outside them.
    pub skipped: Skipped,
}

/// The ODM root's attributes every form instance carries.
#[derive(Clone, Default)]
struct FileInfo {
    file_oid: Option<String>,
    file_type: Option<FileType>,
    created: Option<String>,
    as_of: Option<String>,
}

/// One level of the walk down to FormData.
enum Frame {
    Root,
    Clinical {
        study_oid: Option<String>,
        mdv_oid: Option<String>,
        problem: Option<FormProblem>,
    },
    Subject {
        key: Option<String>,
        tx: Option<TransactionType>,
        site: Option<String>,
        audit: Option<AuditRecord>,
        problem: Option<FormProblem>,
        /// A form of this subject was yielded already.
        yielded: bool,
    },
    Event {
        oid: Option<String>,
        repeat: Option<String>,
        tx: Option<TransactionType>,
        audit: Option<AuditRecord>,
        problem: Option<FormProblem>,
        yielded: bool,
    },
}

/// See the module's text. Iterate it; [`ClinicalReader::summary`] counts what was read.
pub struct ClinicalReader<R: BufRead> {
    xml: XmlReader<R>,
    file: FileInfo,
    frames: Vec<Frame>,
    summary: Summary,
    done: bool,
}

impl<R: BufRead> ClinicalReader<R> {
    pub fn new(input: R, limits: Limits) -> ClinicalReader<R> {
        ClinicalReader {
            xml: XmlReader::new(input, limits),
            file: FileInfo::default(),
            frames: Vec::new(),
            summary: Summary::default(),
            done: false,
        }
    }

    /// Counts over the document so far (all of it once the iteration ended).
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Bytes taken from the input so far.
    pub fn bytes_read(&self) -> u64 {
        self.xml.bytes_read()
    }

    /// The next form instance, or None at the end of the document.
    fn step(&mut self) -> Result<Option<Result<FormInstance, FormError>>, FileError> {
        loop {
            let start = match self.xml.next_token()? {
                Token::Eof => return Ok(None),
                Token::Text(_) => continue,
                Token::End { .. } => {
                    if self.frames.len() > self.xml.depth() {
                        self.frames.pop();
                    }
                    continue;
                }
                Token::Start(start) => start,
            };
            let level = self.frames.last();
            let odm_name = if start.is_odm() { start.local } else { "" };
            match (level, odm_name) {
                (None, _) => {
                    self.file = file_info(&start)?;
                    count_attrs(&start, &mut self.summary.skipped);
                    self.frames.push(Frame::Root);
                }
                (Some(Frame::Root), "Study") => {
                    // The metadata reader's; but a ClinicalData inside it (a 1.3 file in the ODM
                    // 2.0 shape) must not pass for a file without data.
                    count_current(&self.xml, &mut self.summary.skipped);
                    let depth = self.xml.depth();
                    while let Some(child) = self.xml.next_child(depth)? {
                        if child.is_odm() && child.local == "ClinicalData" {
                            return Err(FileError {
                                at: child.at,
                                kind: Refusal::Odm2Structure,
                            });
                        }
                        self.xml.skip()?;
                    }
                }
                (Some(Frame::Root), "ClinicalData") => {
                    self.summary.clinical_data += 1;
                    count_attrs(&start, &mut self.summary.skipped);
                    let study_oid = present(start.attr("StudyOID"));
                    let mdv_oid = present(start.attr("MetaDataVersionOID"));
                    let problem = missing(&study_oid, "ClinicalData", "StudyOID", start.at);
                    self.frames.push(Frame::Clinical {
                        study_oid,
                        mdv_oid,
                        problem,
                    });
                }
                (Some(Frame::Clinical { .. }), "ItemGroupData") => {
                    return Err(FileError {
                        at: start.at,
                        kind: Refusal::NotCaseReportForms,
                    });
                }
                (Some(Frame::Subject { .. } | Frame::Event { .. }), "ItemGroupData") => {
                    return Err(FileError {
                        at: start.at,
                        kind: Refusal::Odm2Structure,
                    });
                }
                (Some(Frame::Clinical { .. }), "SubjectData") => {
                    self.summary.subjects += 1;
                    count_attrs(&start, &mut self.summary.skipped);
                    let key = present(start.attr("SubjectKey"));
                    let (tx, bad_tx) = transaction(&start, "SubjectData");
                    let problem = missing(&key, "SubjectData", "SubjectKey", start.at).or(bad_tx);
                    self.frames.push(Frame::Subject {
                        key,
                        tx,
                        site: None,
                        audit: None,
                        problem,
                        yielded: false,
                    });
                }
                (Some(Frame::Subject { .. }), "StudyEventData") => {
                    count_attrs(&start, &mut self.summary.skipped);
                    let oid = present(start.attr("StudyEventOID"));
                    let repeat = present(start.attr("StudyEventRepeatKey"));
                    let (tx, bad_tx) = transaction(&start, "StudyEventData");
                    let problem =
                        missing(&oid, "StudyEventData", "StudyEventOID", start.at).or(bad_tx);
                    self.frames.push(Frame::Event {
                        oid,
                        repeat,
                        tx,
                        audit: None,
                        problem,
                        yielded: false,
                    });
                }
                (Some(Frame::Subject { .. }), "SiteRef") => {
                    let site = present(start.attr("LocationOID"));
                    count_attrs(&start, &mut self.summary.skipped);
                    if let Some(Frame::Subject { site: slot, .. }) = self.frames.last_mut() {
                        *slot = site;
                    }
                    self.xml.skip()?;
                }
                (Some(Frame::Subject { .. } | Frame::Event { .. }), "AuditRecord") => {
                    let audit = form::read_audit(&mut self.xml, &mut self.summary.skipped)?;
                    if let Some(
                        Frame::Subject {
                            audit: slot,
                            yielded,
                            ..
                        }
                        | Frame::Event {
                            audit: slot,
                            yielded,
                            ..
                        },
                    ) = self.frames.last_mut()
                    {
                        *slot = Some(audit);
                        self.summary.late_audit_records += u64::from(*yielded);
                    }
                }
                (Some(Frame::Subject { .. } | Frame::Event { .. }), "FormData") => {
                    let head = form::head(&start);
                    let context = self.context();
                    let read = form::read_form(&mut self.xml, head, context)?;
                    for frame in &mut self.frames {
                        if let Frame::Subject { yielded, .. } | Frame::Event { yielded, .. } = frame
                        {
                            *yielded = true;
                        }
                    }
                    match &read {
                        Ok(form) => {
                            self.summary.forms += 1;
                            self.summary.skipped.add(&form.skipped);
                        }
                        Err(_) => self.summary.refused += 1,
                    }
                    return Ok(Some(read));
                }
                _ => skip_counted(&mut self.xml, &mut self.summary.skipped)?,
            }
        }
    }

    /// A form instance with the context of the frames around it, and the first problem they have.
    fn context(&self) -> (FormInstance, Option<FormProblem>) {
        let mut form = FormInstance {
            file_oid: self.file.file_oid.clone(),
            file_type: self.file.file_type,
            created: self.file.created.clone(),
            as_of: self.file.as_of.clone(),
            study_oid: String::new(),
            metadata_version_oid: None,
            subject_key: String::new(),
            subject_tx: None,
            site_oid: None,
            event_oid: None,
            event_repeat: None,
            event_tx: None,
            form_oid: String::new(),
            form_repeat: None,
            tx: None,
            audit: None,
            items: Vec::with_capacity(16),
            at: Position::default(),
            skipped: Skipped::default(),
        };
        let mut first = None;
        for frame in &self.frames {
            match frame {
                Frame::Root => {}
                Frame::Clinical {
                    study_oid,
                    mdv_oid,
                    problem,
                } => {
                    form.study_oid = study_oid.clone().unwrap_or_default();
                    form.metadata_version_oid = mdv_oid.clone();
                    first = first.or_else(|| problem.clone());
                }
                Frame::Subject {
                    key,
                    tx,
                    site,
                    audit,
                    problem,
                    ..
                } => {
                    form.subject_key = key.clone().unwrap_or_default();
                    form.subject_tx = *tx;
                    form.site_oid = site.clone();
                    form.audit = audit.clone();
                    first = first.or_else(|| problem.clone());
                }
                Frame::Event {
                    oid,
                    repeat,
                    tx,
                    audit,
                    problem,
                    ..
                } => {
                    form.event_oid = oid.clone();
                    form.event_repeat = repeat.clone();
                    form.event_tx = *tx;
                    if audit.is_some() {
                        form.audit = audit.clone();
                    }
                    first = first.or_else(|| problem.clone());
                }
            }
        }
        (form, first)
    }
}

impl<R: BufRead> Iterator for ClinicalReader<R> {
    type Item = Result<FormInstance, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(Ok(form))) => Some(Ok(form)),
            Ok(Some(Err(e))) => Some(Err(ReadError::Form(e))),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(ReadError::File(e)))
            }
        }
    }
}

/// The root's attributes; a FileType ODM does not define refuses the file.
fn file_info(root: &StartTag<'_>) -> Result<FileInfo, FileError> {
    let file_type = match root.attr("FileType") {
        None | Some("") => None,
        Some("Snapshot") => Some(FileType::Snapshot),
        Some("Transactional") => Some(FileType::Transactional),
        Some(_) => {
            return Err(FileError {
                at: root.at,
                kind: Refusal::FileType,
            });
        }
    };
    Ok(FileInfo {
        file_oid: present(root.attr("FileOID")),
        file_type,
        created: present(root.attr("CreationDateTime")),
        as_of: present(root.attr("AsOfDateTime")),
    })
}

/// The problem of a required attribute that is absent.
fn missing(
    value: &Option<String>,
    element: &'static str,
    attribute: &'static str,
    at: Position,
) -> Option<FormProblem> {
    value.is_none().then_some(FormProblem::MissingAttribute {
        element,
        attribute,
        at,
    })
}

/// An element's TransactionType, and the problem of one ODM does not define.
fn transaction(
    start: &StartTag<'_>,
    element: &'static str,
) -> (Option<TransactionType>, Option<FormProblem>) {
    match start.attr("TransactionType") {
        None | Some("") => (None, None),
        Some(value) => match TransactionType::parse(value) {
            Some(tx) => (Some(tx), None),
            None => (
                None,
                Some(FormProblem::BadTransactionType {
                    element,
                    at: start.at,
                }),
            ),
        },
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_forms;
#[cfg(test)]
mod tests_perf;
