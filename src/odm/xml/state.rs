//! The reader's own state beside the parser, and what it checks on each piece: the start tag
//! (caps, attributes, names, the ODM root), text, the mapping of parser errors to our reasons, and
//! the characters XML allows.

use std::io::BufRead;

use quick_xml::XmlVersion;
use quick_xml::events::BytesStart;

use super::names::{Scopes, split};
use super::source::{Fault, Source};
use super::{
    Attr, EncodingProblem, FileError, Limits, Malformed, ODM13_NS, ODM20_NS, Out, Piece, Refusal,
    StartTag,
};
use crate::odm::model::Position;

/// The longest element or attribute name, and namespace URI declared, in bytes. The parser keeps
/// the names of the open elements and the namespaces in scope: this bounds them by the depth.
pub const MAX_NAME_BYTES: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Prolog,
    Root,
    Epilog,
}

/// What the reader tracks besides the parser (apart so borrows of the parser's buffer and of
/// this state do not collide).
pub(super) struct State {
    pub(super) limits: Limits,
    pub(super) version: XmlVersion,
    pub(super) stage: Stage,
    pub(super) seen_any: bool,
    /// Start positions of the open elements, outermost first.
    pub(super) open: Vec<Position>,
    /// The namespaces declared on the open elements.
    pub(super) scopes: Scopes,
    pub(super) pending_end: Option<Position>,
    pub(super) failed: Option<FileError>,
    pub(super) attrs: Vec<Attr>,
    pub(super) n_attrs: usize,
    pub(super) ns: String,
    pub(super) local: String,
    pub(super) text: String,
    pub(super) at: Position,
}

impl State {
    /// The start tag read last.
    pub(super) fn start_tag(&self) -> StartTag<'_> {
        StartTag {
            ns: &self.ns,
            local: &self.local,
            attrs: &self.attrs[..self.n_attrs],
            at: self.at,
            depth: self.open.len(),
        }
    }

    /// A start tag: caps, attributes, names, and for the root the ODM checks.
    pub(super) fn start(&mut self, e: &BytesStart<'_>, at: Position) -> Result<(), Refusal> {
        if self.stage == Stage::Epilog {
            return Err(Refusal::Malformed(Malformed::SecondRoot));
        }
        if self.open.len() >= self.limits.max_depth {
            return Err(Refusal::TooDeep {
                cap: self.limits.max_depth,
            });
        }
        if e.name().as_ref().len() > MAX_NAME_BYTES {
            return Err(Refusal::TooLarge {
                piece: Piece::Name,
                cap: MAX_NAME_BYTES,
            });
        }
        self.scopes.open();
        // One pass over the attributes: declarations into the scope, the others into the slots
        // with their prefix where the namespace goes once all declarations are known.
        self.n_attrs = 0;
        for (i, attr) in e.attributes().with_checks(false).enumerate() {
            if i >= self.limits.max_attributes {
                return Err(Refusal::TooManyAttributes {
                    cap: self.limits.max_attributes,
                });
            }
            let attr = attr.map_err(|_| Refusal::Malformed(Malformed::Attribute))?;
            let key = attr.key.into_inner();
            let value = attr
                .normalized_value(self.version)
                .map_err(|_| Refusal::Malformed(Malformed::BadReference))?;
            let (prefix, local) = split(key)?;
            let declared = match (prefix, local) {
                ("", "xmlns") => Some(""),
                ("xmlns", declared) => Some(declared),
                _ => None,
            };
            // Names and the namespaces declared stay while their element is open: each is short.
            if key.len() > MAX_NAME_BYTES || (declared.is_some() && value.len() > MAX_NAME_BYTES) {
                return Err(Refusal::TooLarge {
                    piece: Piece::Name,
                    cap: MAX_NAME_BYTES,
                });
            }
            if !legal(&value) {
                return Err(Refusal::Malformed(Malformed::IllegalCharacter));
            }
            if let Some(declared) = declared {
                self.scopes.declare(declared, &value)?;
                continue;
            }
            if self.n_attrs == self.attrs.len() {
                self.attrs.push(Attr::default());
            }
            let slot = &mut self.attrs[self.n_attrs];
            self.n_attrs += 1;
            slot.ns.clear();
            slot.ns.push_str(prefix);
            slot.local.clear();
            slot.local.push_str(local);
            slot.value.clear();
            slot.value.push_str(&value);
        }
        for slot in &mut self.attrs[..self.n_attrs] {
            if !slot.ns.is_empty() {
                let ns = self.scopes.resolve(&slot.ns)?;
                slot.ns.clear();
                slot.ns.push_str(ns);
            }
        }
        // Two attributes of one name, by namespace and local name (as XML Namespaces asks).
        let attrs = &self.attrs[..self.n_attrs];
        for (i, a) in attrs.iter().enumerate() {
            if attrs[..i]
                .iter()
                .any(|b| b.local == a.local && b.ns == a.ns)
            {
                return Err(Refusal::Malformed(Malformed::Attribute));
            }
        }
        let (prefix, local) = split(e.name().into_inner())?;
        let ns = self.scopes.resolve(prefix)?;
        self.ns.clear();
        self.ns.push_str(ns);
        self.local.clear();
        self.local.push_str(local);
        if self.stage == Stage::Prolog {
            self.check_root()?;
            self.stage = Stage::Root;
        }
        self.open.push(at);
        Ok(())
    }

    fn check_root(&self) -> Result<(), Refusal> {
        if self.ns == ODM20_NS {
            return Err(Refusal::Odm2);
        }
        if self.local != "ODM" {
            return Err(Refusal::RootNotOdm);
        }
        if self.ns != ODM13_NS {
            return Err(Refusal::RootNamespace);
        }
        let version = self.attrs[..self.n_attrs]
            .iter()
            .find(|a| a.ns.is_empty() && a.local == "ODMVersion");
        if let Some(version) = version {
            let v = version.value.as_str();
            let ok = v == "1.3"
                || v.strip_prefix("1.3.").is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
                });
            if !ok {
                return Err(Refusal::OdmVersion);
            }
        }
        Ok(())
    }

    /// A run of text: kept inside the root, white space only outside it.
    pub(super) fn text(&mut self, text: &str) -> Result<Option<Out>, Refusal> {
        if !legal(text) {
            return Err(Refusal::Malformed(Malformed::IllegalCharacter));
        }
        if self.stage != Stage::Root {
            return if text
                .bytes()
                .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            {
                Ok(None)
            } else {
                Err(Refusal::Malformed(Malformed::TextOutsideRoot))
            };
        }
        self.text.clear();
        self.text.push_str(text);
        Ok(Some(Out::Text))
    }

    /// A parser error in our words, at the start of the piece it happened in.
    pub(super) fn refusal_of(
        &self,
        e: quick_xml::Error,
        source: &mut Source<impl BufRead>,
    ) -> FileError {
        use quick_xml::errors::{Error, IllFormedError};
        let at = source.marked();
        let doctype =
            source.first().len() >= 9 && source.first()[..9].eq_ignore_ascii_case(b"<!DOCTYPE");
        let kind = if doctype {
            Refusal::Doctype
        } else {
            match e {
                Error::Io(_) => match source.take_fault() {
                    Some(Fault::Cap) => Refusal::TooLarge {
                        piece: piece_of(source.first()),
                        cap: self.limits.max_event_bytes,
                    },
                    Some(Fault::WideEncoding { bom: true }) => {
                        Refusal::Encoding(EncodingProblem::Utf16Bom)
                    }
                    Some(Fault::WideEncoding { bom: false }) => {
                        Refusal::Encoding(EncodingProblem::WideWithoutBom)
                    }
                    Some(Fault::NotAscii) => Refusal::Encoding(EncodingProblem::NotAscii),
                    Some(Fault::Io(kind)) => Refusal::Io(kind),
                    None => Refusal::Io(std::io::ErrorKind::Other),
                },
                Error::Syntax(_) => Refusal::Malformed(Malformed::Syntax),
                Error::IllFormed(
                    IllFormedError::MismatchedEndTag { .. } | IllFormedError::UnmatchedEndTag(_),
                ) => Refusal::Malformed(Malformed::MismatchedEnd),
                Error::IllFormed(IllFormedError::MissingEndTag(_)) => {
                    Refusal::Malformed(Malformed::Unclosed)
                }
                Error::IllFormed(IllFormedError::UnclosedReference) => {
                    Refusal::Malformed(Malformed::BadReference)
                }
                Error::IllFormed(IllFormedError::MissingDoctypeName) => Refusal::Doctype,
                Error::IllFormed(
                    IllFormedError::MissingDeclVersion(_) | IllFormedError::UnknownVersion,
                ) => Refusal::Malformed(Malformed::Declaration),
                Error::IllFormed(_) => Refusal::Malformed(Malformed::Syntax),
                Error::InvalidAttr(_) => Refusal::Malformed(Malformed::Attribute),
                Error::Encoding(_) => Refusal::Encoding(EncodingProblem::BadUtf8),
                Error::Escape(_) => Refusal::Malformed(Malformed::BadReference),
                Error::Namespace(_) => Refusal::Malformed(Malformed::Namespace),
            }
        };
        FileError { at, kind }
    }
}

/// What kind of piece starts with these bytes.
pub(super) fn piece_of(first: &[u8]) -> Piece {
    if first.starts_with(b"<!--") {
        Piece::Comment
    } else if first.starts_with(b"<![CDATA[") || first.starts_with(b"<![") {
        Piece::Cdata
    } else if first.starts_with(b"<!") {
        Piece::Doctype
    } else if first.starts_with(b"<?") {
        Piece::ProcessingInstruction
    } else if first.starts_with(b"</") {
        Piece::EndTag
    } else if first.starts_with(b"<") {
        Piece::StartTag
    } else if first.starts_with(b"&") {
        Piece::Reference
    } else {
        Piece::Text
    }
}

/// The names US-ASCII goes by in XML declarations (OpenClinica 3 declares it).
pub(super) fn is_ascii(name: &str) -> bool {
    ["US-ASCII", "ASCII"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// The names ISO-8859-1 goes by in XML declarations.
pub(super) fn is_latin1(name: &str) -> bool {
    ["ISO-8859-1", "ISO_8859-1", "ISO8859-1", "LATIN1", "L1"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// Whether XML 1.0 allows the character (its `Char` production).
pub(super) fn legal_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Whether XML 1.0 allows every character of `s` (a `str` holds no surrogates, so only the
/// control characters and U+FFFE, U+FFFF are to be looked for).
fn legal(s: &str) -> bool {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c < 0x20 {
            if !matches!(c, b'\t' | b'\n' | b'\r') {
                return false;
            }
        } else if c == 0xEF
            && b.get(i + 1) == Some(&0xBF)
            && matches!(b.get(i + 2), Some(0xBE | 0xBF))
        {
            return false;
        }
    }
    true
}
