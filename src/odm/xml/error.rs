//! Why a document is refused as a whole: our own words, where it happened, never its content.

use std::fmt;
use std::io;

use crate::odm::model::Position;

/// A document refused as a whole: nothing of it is to be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {kind}")]
pub struct FileError {
    /// Where the offending piece starts (for an unclosed element: its start tag).
    pub at: Position,
    pub kind: Refusal,
}

/// A piece of XML, as the size cap names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    StartTag,
    EndTag,
    Text,
    Cdata,
    Comment,
    ProcessingInstruction,
    Doctype,
    Reference,
    /// An element or attribute name, or a namespace URI declared.
    Name,
}

impl Piece {
    fn describe(self) -> &'static str {
        match self {
            Piece::StartTag => "an element's start tag (with its attributes)",
            Piece::EndTag => "an end tag",
            Piece::Text => "a run of text",
            Piece::Cdata => "a CDATA section",
            Piece::Comment => "a comment",
            Piece::ProcessingInstruction => "a processing instruction or XML declaration",
            Piece::Doctype => "a DOCTYPE",
            Piece::Reference => "an entity or character reference",
            Piece::Name => "an element or attribute name, or a namespace URI declared,",
        }
    }
}

/// Encodings refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodingProblem {
    /// A UTF-16 (or UTF-32) byte-order mark.
    Utf16Bom,
    /// Bytes that can only be UTF-16 or UTF-32 without a byte-order mark.
    WideWithoutBom,
    /// The XML declaration names an encoding other than UTF-8, ISO-8859-1 and US-ASCII.
    Declared,
    /// A byte above 0x7F in a document declared US-ASCII.
    NotAscii,
    /// Bytes that are not UTF-8 where UTF-8 is read.
    BadUtf8,
}

/// How the XML itself is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The document ends inside this element.
    Unclosed,
    /// An end tag that does not close the element open there.
    MismatchedEnd,
    /// `&name;` that is not one of XML's five entities nor a character reference to a character
    /// XML allows, or a `&` without its `;`.
    BadReference,
    /// A character XML 1.0 does not allow (a control character, U+FFFE, U+FFFF).
    IllegalCharacter,
    /// A namespace prefix that is not declared, or a namespace declaration XML forbids.
    Namespace,
    /// An attribute without value or quotes, or given twice.
    Attribute,
    /// A tag, comment, CDATA section or processing instruction that is not closed or not valid.
    Syntax,
    /// The XML declaration somewhere other than at the very start, or without its version.
    Declaration,
    /// A second root element.
    SecondRoot,
    /// Text other than white space outside the root element.
    TextOutsideRoot,
    /// No element at all.
    NoRoot,
}

impl Malformed {
    fn describe(self) -> &'static str {
        match self {
            Malformed::Unclosed => "this element is never closed: the document ends inside it",
            Malformed::MismatchedEnd => "this end tag does not match the element open here",
            Malformed::BadReference => {
                "an entity reference other than &lt; &gt; &amp; &apos; &quot; or a character reference, or one not closed by ;"
            }
            Malformed::IllegalCharacter => "a character XML 1.0 does not allow",
            Malformed::Namespace => {
                "an undeclared namespace prefix or a forbidden namespace declaration"
            }
            Malformed::Attribute => "an attribute without a quoted value, or given twice",
            Malformed::Syntax => {
                "markup that is not closed or not valid (tag, comment, CDATA section or processing instruction)"
            }
            Malformed::Declaration => "an XML declaration that is misplaced or has no version",
            Malformed::SecondRoot => "a second root element (a document has exactly one)",
            Malformed::TextOutsideRoot => "text outside the root element",
            Malformed::NoRoot => "no root element",
        }
    }
}

/// Why a whole document is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Any DOCTYPE: it is where external entities and entity expansion live.
    Doctype,
    /// The root element is not `ODM`.
    RootNotOdm,
    /// `ODM` without the ODM 1.3 namespace (no namespace: ODM 1.2 or older; or another one).
    RootNamespace,
    /// The ODM 2.0 namespace.
    Odm2,
    /// `ODMVersion` is not 1.3 or 1.3.x.
    OdmVersion,
    /// Item groups where forms belong (under StudyEventData or SubjectData, nested in each
    /// other), or ClinicalData inside Study: the ODM 2.0 shape some 1.3 documents have.
    Odm2Structure,
    /// `FileType` is neither Snapshot nor Transactional.
    FileType,
    /// An XML version other than 1.0 is declared.
    XmlVersion,
    /// One piece of XML over `odm.max_event_bytes`.
    TooLarge {
        piece: Piece,
        cap: usize,
    },
    /// Elements nested deeper than `odm.max_depth`.
    TooDeep {
        cap: usize,
    },
    /// More attributes on one element than `odm.max_attributes`.
    TooManyAttributes {
        cap: usize,
    },
    Encoding(EncodingProblem),
    Malformed(Malformed),
    /// Item groups directly under ClinicalData: a Dataset-XML file (SDTM rows), not case report
    /// forms.
    NotCaseReportForms,
    /// The input could not be read.
    Io(io::ErrorKind),
}

impl Refusal {
    /// A short stable name, for counting refusals by reason (reports, metrics).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Doctype => "doctype",
            Refusal::RootNotOdm => "root_not_odm",
            Refusal::RootNamespace => "root_namespace",
            Refusal::Odm2 => "odm_2",
            Refusal::OdmVersion => "odm_version",
            Refusal::Odm2Structure => "odm_2_structure",
            Refusal::FileType => "file_type",
            Refusal::XmlVersion => "xml_version",
            Refusal::TooLarge { .. } => "too_large",
            Refusal::TooDeep { .. } => "too_deep",
            Refusal::TooManyAttributes { .. } => "too_many_attributes",
            Refusal::Encoding(_) => "encoding",
            Refusal::Malformed(_) => "malformed",
            Refusal::NotCaseReportForms => "not_case_report_forms",
            Refusal::Io(_) => "io",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Doctype => f.write_str(
                "a DOCTYPE is not accepted (no DTD, no entities: ODM needs none)",
            ),
            Refusal::RootNotOdm => f.write_str("the root element is not ODM: not an ODM document"),
            Refusal::RootNamespace => f.write_str(
                "the ODM root is not in the ODM 1.3 namespace http://www.cdisc.org/ns/odm/v1.3 (ODM 1.2 and older are not supported)",
            ),
            Refusal::Odm2 => f.write_str(
                "ODM 2.0 (namespace http://www.cdisc.org/ns/odm/v2.0) is not supported yet: export ODM 1.3.2",
            ),
            Refusal::OdmVersion => f.write_str("ODMVersion is not 1.3 or 1.3.x"),
            Refusal::Odm2Structure => f.write_str(
                "an ODM 2.0-shaped structure (ItemGroupData where FormData belongs, or ClinicalData inside Study): not supported yet",
            ),
            Refusal::FileType => f.write_str("FileType is neither Snapshot nor Transactional"),
            Refusal::XmlVersion => f.write_str("the XML declaration names a version other than 1.0"),
            Refusal::TooLarge { piece, cap } => write!(
                f,
                "{} is larger than {cap} bytes (odm.max_event_bytes)",
                piece.describe()
            ),
            Refusal::TooDeep { cap } => {
                write!(f, "elements are nested deeper than {cap} (odm.max_depth)")
            }
            Refusal::TooManyAttributes { cap } => write!(
                f,
                "an element has more than {cap} attributes (odm.max_attributes)"
            ),
            Refusal::Encoding(EncodingProblem::Utf16Bom) => {
                f.write_str("UTF-16 (byte-order mark) is not accepted: UTF-8 or ISO-8859-1 only")
            }
            Refusal::Encoding(EncodingProblem::WideWithoutBom) => {
                f.write_str("UTF-16 or UTF-32 is not accepted: UTF-8 or ISO-8859-1 only")
            }
            Refusal::Encoding(EncodingProblem::Declared) => f.write_str(
                "the XML declaration names an encoding other than UTF-8, ISO-8859-1 and US-ASCII",
            ),
            Refusal::Encoding(EncodingProblem::NotAscii) => f.write_str(
                "a byte that is not ASCII in a document declared US-ASCII (declare UTF-8 or ISO-8859-1 if that is what it is)",
            ),
            Refusal::Encoding(EncodingProblem::BadUtf8) => {
                f.write_str("bytes that are not UTF-8 (declare ISO-8859-1 if that is what it is)")
            }
            Refusal::Malformed(m) => write!(f, "malformed XML: {}", m.describe()),
            Refusal::NotCaseReportForms => f.write_str(
                "ItemGroupData directly under ClinicalData: a Dataset-XML file (tabulation rows), not case report form data",
            ),
            Refusal::Io(kind) => write!(f, "the input could not be read ({kind})"),
        }
    }
}
