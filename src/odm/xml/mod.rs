//! The hardened XML reader every ODM path uses (daemon messages, `odm import`, `study from-odm`).
//!
//! An XML document is hostile input. This reader streams over any [`BufRead`] (quick-xml's
//! `Reader` over [`source::Source`], namespaces kept by [`names`]) and holds at most one piece of XML at a time, so its memory
//! is bounded by the caps ([`Limits`]) whatever the input's size. It refuses, each with its own
//! [`Refusal`] and the line and column where it happened, never the content:
//! - any DOCTYPE: there is no DTD support, hence no external entity and no entity expansion of
//!   any kind (XXE and "billion laughs" are impossible by construction);
//! - a root other than `ODM` in the ODM 1.3 namespace (any prefix), the ODM 2.0 namespace (its own
//!   reason), an `ODMVersion` other than 1.3 or 1.3.x;
//! - one piece (start tag with its attributes, end tag, text, CDATA, comment, processing
//!   instruction, reference) over `max_event_bytes`, bounded while reading: the source refuses to
//!   hand the parser more than the cap plus one byte per piece;
//! - nesting deeper than `max_depth`, more attributes on one element than `max_attributes`;
//! - encodings other than UTF-8, a declared ISO-8859-1 (transcoded to UTF-8 as it is read) and a
//!   declared US-ASCII (every OpenClinica 3 export; read as the subset of UTF-8 it is, a byte above
//!   0x7F refused); UTF-16 and UTF-32, with or without a byte-order mark;
//! - malformed XML: unclosed or mismatched elements, references other than XML's five entities
//!   and character references, characters XML forbids, undeclared prefixes, bad UTF-8, a second
//!   root, text outside the root.
//!
//! Attribute values are normalised as XML requires (a literal tab or newline becomes a space,
//! `&#10;` stays a newline); text has its line ends normalised (`\r\n` -> `\n`). Comments and
//! processing instructions are read past.

mod error;
mod names;
mod source;
mod state;

use std::io::BufRead;

use quick_xml::XmlVersion;
use quick_xml::events::Event;
use quick_xml::reader::Reader;

use crate::config::OdmSettings;
use crate::odm::model::Position;
pub use error::{EncodingProblem, FileError, Malformed, Piece, Refusal};
use source::Source;
pub use state::MAX_NAME_BYTES;
use state::{Stage, State, is_ascii, is_latin1, legal_char, piece_of};

/// The ODM 1.3 namespace (1.3, 1.3.1, 1.3.2 share it).
pub const ODM13_NS: &str = "http://www.cdisc.org/ns/odm/v1.3";
/// The ODM 2.0 namespace: refused with [`Refusal::Odm2`].
pub const ODM20_NS: &str = "http://www.cdisc.org/ns/odm/v2.0";
/// The `xml:` prefix's namespace (`xml:lang`).
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// The caps (see `config::OdmSettings`, whose values they are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_depth: usize,
    pub max_attributes: usize,
    pub max_form_items: usize,
    pub max_form_bytes: usize,
}

impl From<&OdmSettings> for Limits {
    fn from(s: &OdmSettings) -> Limits {
        Limits {
            max_event_bytes: s.max_event_bytes,
            max_depth: s.max_depth,
            max_attributes: s.max_attributes,
            max_form_items: s.max_form_items,
            max_form_bytes: s.max_form_bytes,
        }
    }
}

impl Default for Limits {
    /// The configuration's defaults.
    fn default() -> Limits {
        Limits::from(&OdmSettings::default())
    }
}

/// One attribute, namespace resolved and value normalised.
#[derive(Clone, Debug, Default)]
pub struct Attr {
    ns: String,
    local: String,
    value: String,
}

impl Attr {
    /// The namespace URI; empty for an unprefixed attribute (ODM's own attributes are unprefixed).
    pub fn ns(&self) -> &str {
        &self.ns
    }
    pub fn local(&self) -> &str {
        &self.local
    }
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// An element's start. Namespace declarations (`xmlns`, `xmlns:p`) are not among `attrs`.
#[derive(Clone, Copy, Debug)]
pub struct StartTag<'a> {
    /// The element's namespace URI; empty for no namespace.
    pub ns: &'a str,
    pub local: &'a str,
    pub attrs: &'a [Attr],
    pub at: Position,
    /// 1 for the root.
    pub depth: usize,
}

impl<'a> StartTag<'a> {
    /// In the ODM 1.3 namespace.
    pub fn is_odm(&self) -> bool {
        self.ns == ODM13_NS
    }

    /// The value of the unprefixed attribute `local`.
    pub fn attr(&self, local: &str) -> Option<&'a str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_empty() && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// Attributes of other namespaces than none and `xml:`: vendor extensions.
    pub fn extension_attrs(&self) -> impl Iterator<Item = &'a Attr> + use<'a> {
        self.attrs
            .iter()
            .filter(|a| !a.ns.is_empty() && a.ns != XML_NS)
    }
}

/// What the reader yields.
#[derive(Clone, Copy, Debug)]
pub enum Token<'a> {
    Start(StartTag<'a>),
    /// The end of the element opened last (also after an empty-element tag `<a/>`).
    End {
        at: Position,
    },
    /// Character data inside the root: one run of text, one resolved reference or one CDATA
    /// section; several may follow each other (see [`XmlReader::read_text`]).
    Text(&'a str),
    /// The end of a well-formed document; yielded again on further calls.
    Eof,
}

pub(super) enum Out {
    Start,
    End(Position),
    Text,
    Eof,
}

/// The streaming reader: see the module's text.
pub struct XmlReader<R: BufRead> {
    parser: Reader<Source<R>>,
    buf: Vec<u8>,
    st: State,
}

impl<R: BufRead> XmlReader<R> {
    pub fn new(input: R, limits: Limits) -> XmlReader<R> {
        let mut parser = Reader::from_reader(Source::new(input, limits.max_event_bytes));
        let config = parser.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        config.allow_dangling_amp = false;
        XmlReader {
            parser,
            buf: Vec::new(),
            st: State {
                limits,
                version: XmlVersion::Implicit1_0,
                stage: Stage::Prolog,
                seen_any: false,
                open: Vec::new(),
                scopes: names::Scopes::default(),
                pending_end: None,
                failed: None,
                attrs: Vec::new(),
                n_attrs: 0,
                ns: String::new(),
                local: String::new(),
                text: String::new(),
                at: Position::default(),
            },
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.st.limits
    }

    /// How deep the reader is: the depth of the innermost open element (0 outside the root).
    pub fn depth(&self) -> usize {
        self.st.open.len()
    }

    /// Where the last token returned starts.
    pub fn at(&self) -> Position {
        self.st.at
    }

    /// The namespace and local name of the element whose start tag was read last.
    pub fn current(&self) -> (&str, &str) {
        (&self.st.ns, &self.st.local)
    }

    /// Bytes taken from the input so far (before any transcoding).
    pub fn bytes_read(&self) -> u64 {
        self.parser.get_ref().taken()
    }

    /// The next token. After an error, the same error again.
    pub fn next_token(&mut self) -> Result<Token<'_>, FileError> {
        let out = self.step()?;
        let st = &self.st;
        Ok(match out {
            Out::Start => Token::Start(st.start_tag()),
            Out::End(at) => Token::End { at },
            Out::Text => Token::Text(&st.text),
            Out::Eof => Token::Eof,
        })
    }

    /// After the start tag of an element at `depth`: the start tag of its next child element, or
    /// None at its end. Text between the children is read past. The caller reads each child
    /// whole (with [`XmlReader::skip`], [`XmlReader::read_text`], or by walking its own
    /// children), so what comes next is a child again.
    pub fn next_child(&mut self, depth: usize) -> Result<Option<StartTag<'_>>, FileError> {
        loop {
            if self.depth() < depth {
                return Ok(None);
            }
            match self.step()? {
                Out::Start => break,
                Out::Eof => return Ok(None),
                Out::End(_) | Out::Text => {}
            }
        }
        Ok(Some(self.st.start_tag()))
    }

    /// [`XmlReader::advance`], remembering the first error.
    fn step(&mut self) -> Result<Out, FileError> {
        if let Some(failed) = &self.st.failed {
            return Err(failed.clone());
        }
        self.advance()
            .inspect_err(|e| self.st.failed = Some(e.clone()))
    }

    /// After a [`Token::Start`]: reads past the rest of that element (its subtree, checked like
    /// everything else).
    pub fn skip(&mut self) -> Result<(), FileError> {
        let depth = self.depth();
        while self.depth() >= depth {
            if let Token::Eof = self.next_token()? {
                break;
            }
        }
        Ok(())
    }

    /// After a [`Token::Start`]: appends the element's character data to `out`, up to its end.
    /// Child elements are read past; returns how many there were. More than `max_event_bytes` of
    /// text in all refuses the document.
    pub fn read_text(&mut self, out: &mut String) -> Result<u64, FileError> {
        let depth = self.depth();
        let start = out.len();
        let cap = self.st.limits.max_event_bytes;
        let mut children = 0;
        while self.depth() >= depth {
            match self.next_token()? {
                Token::Text(t) => {
                    if out.len() - start + t.len() > cap {
                        let e = FileError {
                            at: self.st.at,
                            kind: Refusal::TooLarge {
                                piece: Piece::Text,
                                cap,
                            },
                        };
                        self.st.failed = Some(e.clone());
                        return Err(e);
                    }
                    out.push_str(t);
                }
                Token::Start(_) => {
                    children += 1;
                    self.skip()?;
                }
                Token::End { .. } => {}
                Token::Eof => break,
            }
        }
        Ok(children)
    }

    fn advance(&mut self) -> Result<Out, FileError> {
        if let Some(at) = self.st.pending_end.take() {
            self.close();
            self.st.at = at;
            return Ok(Out::End(at));
        }
        loop {
            self.buf.clear();
            self.parser.get_mut().mark();
            let event = self.parser.read_event_into(&mut self.buf);
            let source = self.parser.get_mut();
            let at = source.marked();
            self.st.at = at;
            let event = match event {
                Ok(event) => event,
                Err(e) => return Err(self.st.refusal_of(e, source)),
            };
            let cap = self.st.limits.max_event_bytes;
            if source.window() > cap as u64 {
                let piece = piece_of(source.first());
                return Err(FileError {
                    at,
                    kind: Refusal::TooLarge { piece, cap },
                });
            }
            let fail = |kind| Err(FileError { at, kind });
            let first = !self.st.seen_any;
            self.st.seen_any = true;
            match event {
                Event::Decl(decl) => {
                    if !first {
                        return fail(Refusal::Malformed(Malformed::Declaration));
                    }
                    match decl.version().as_deref() {
                        Ok("1.0") => self.st.version = XmlVersion::Explicit1_0,
                        Ok(_) => return fail(Refusal::XmlVersion),
                        Err(_) => return fail(Refusal::Malformed(Malformed::Declaration)),
                    }
                    match decl.encoding() {
                        None => {}
                        Some(Ok(name)) if name.eq_ignore_ascii_case("UTF-8") => {}
                        Some(Ok(name)) if is_latin1(&name) => source.set_latin1(),
                        Some(Ok(name)) if is_ascii(&name) => source.set_ascii(),
                        Some(Ok(_)) => return fail(Refusal::Encoding(EncodingProblem::Declared)),
                        Some(Err(_)) => return fail(Refusal::Malformed(Malformed::Declaration)),
                    }
                }
                Event::DocType(_) => return fail(Refusal::Doctype),
                Event::PI(_) | Event::Comment(_) => {}
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let empty = matches!(event, Event::Empty(_));
                    self.st
                        .start(e, at)
                        .map_err(|kind| FileError { at, kind })?;
                    if empty {
                        self.st.pending_end = Some(at);
                    }
                    return Ok(Out::Start);
                }
                Event::End(_) => {
                    self.close();
                    return Ok(Out::End(at));
                }
                Event::Text(t) => {
                    let text = t.xml10_content();
                    if let Some(out) = self.st.text(&text).map_err(|kind| FileError { at, kind })? {
                        return Ok(out);
                    }
                }
                Event::CData(c) => {
                    if self.st.stage != Stage::Root {
                        return fail(Refusal::Malformed(Malformed::TextOutsideRoot));
                    }
                    let text = c.xml10_content();
                    self.st.text(&text).map_err(|kind| FileError { at, kind })?;
                    return Ok(Out::Text);
                }
                Event::GeneralRef(r) => {
                    if self.st.stage != Stage::Root {
                        return fail(Refusal::Malformed(Malformed::TextOutsideRoot));
                    }
                    let c = match r.resolve_char_ref() {
                        Ok(Some(c)) if legal_char(c) => c,
                        Ok(Some(_)) | Err(_) => {
                            return fail(Refusal::Malformed(Malformed::BadReference));
                        }
                        Ok(None) => match &*r {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "apos" => '\'',
                            "quot" => '"',
                            _ => return fail(Refusal::Malformed(Malformed::BadReference)),
                        },
                    };
                    self.st.text.clear();
                    self.st.text.push(c);
                    return Ok(Out::Text);
                }
                Event::Eof => {
                    if let Some(open) = self.st.open.last() {
                        return Err(FileError {
                            at: *open,
                            kind: Refusal::Malformed(Malformed::Unclosed),
                        });
                    }
                    if self.st.stage != Stage::Epilog {
                        return fail(Refusal::Malformed(Malformed::NoRoot));
                    }
                    return Ok(Out::Eof);
                }
            }
        }
    }

    /// An element ends.
    fn close(&mut self) {
        self.st.open.pop();
        self.st.scopes.close();
        if self.st.open.is_empty() {
            self.st.stage = Stage::Epilog;
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_caps;
