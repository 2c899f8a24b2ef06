//! Namespaces in scope, kept by the reader itself (one pass over each start tag's attributes,
//! where quick-xml's `NsReader` would parse them twice): the prefixes declared on the open
//! elements, and the rules of Namespaces in XML 1.0 for declaring them.

use super::{Malformed, Refusal, XML_NS};

/// The namespace `xmlns` declarations are in: nothing may be bound to it.
const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

#[derive(Default)]
pub(super) struct Scopes {
    /// (prefix, namespace) in document order; the prefix "" is the default namespace, and an
    /// empty namespace undeclares it.
    bindings: Vec<(String, String)>,
    /// For each open element, how many bindings were in force before its own.
    marks: Vec<usize>,
}

impl Scopes {
    /// An element opens: its declarations come next.
    pub(super) fn open(&mut self) {
        self.marks.push(self.bindings.len());
    }

    /// The open element ends: its declarations go.
    pub(super) fn close(&mut self) {
        if let Some(mark) = self.marks.pop() {
            self.bindings.truncate(mark);
        }
    }

    /// `xmlns="ns"` (prefix "") or `xmlns:prefix="ns"` on the element opened last.
    pub(super) fn declare(&mut self, prefix: &str, ns: &str) -> Result<(), Refusal> {
        let bad = Err(Refusal::Malformed(Malformed::Namespace));
        if prefix == "xmlns" || ns == XMLNS_NS || (prefix == "xml") != (ns == XML_NS) {
            return bad;
        }
        if !prefix.is_empty() && ns.is_empty() {
            return bad;
        }
        if prefix != "xml" {
            self.bindings.push((prefix.to_string(), ns.to_string()));
        }
        Ok(())
    }

    /// The namespace of a prefix; "" for no namespace (an unprefixed name outside any default).
    pub(super) fn resolve(&self, prefix: &str) -> Result<&str, Refusal> {
        if prefix == "xml" {
            return Ok(XML_NS);
        }
        match self.bindings.iter().rev().find(|(p, _)| p == prefix) {
            Some((_, ns)) => Ok(ns),
            None if prefix.is_empty() => Ok(""),
            None => Err(Refusal::Malformed(Malformed::Namespace)),
        }
    }
}

/// (prefix, local name) of a qualified name; the prefix is "" when there is none.
pub(super) fn split(qname: &str) -> Result<(&str, &str), Refusal> {
    match qname.split_once(':') {
        None => Ok(("", qname)),
        Some((prefix, local))
            if !prefix.is_empty() && !local.is_empty() && !local.contains(':') =>
        {
            Ok((prefix, local))
        }
        Some(_) => Err(Refusal::Malformed(Malformed::Namespace)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_follow_the_rules_of_namespaces_in_xml() {
        let mut s = Scopes::default();
        s.open();
        s.declare("", "urn:d").unwrap();
        s.declare("p", "urn:p").unwrap();
        s.declare("xml", XML_NS).unwrap();
        for (prefix, ns) in [
            ("xmlns", "urn:x"),
            ("p", ""),
            ("xml", "urn:x"),
            ("q", XML_NS),
            ("q", XMLNS_NS),
        ] {
            assert!(s.declare(prefix, ns).is_err(), "{prefix}={ns}");
        }
        assert_eq!(s.resolve(""), Ok("urn:d"));
        s.open();
        s.declare("", "").unwrap();
        s.declare("p", "urn:p2").unwrap();
        assert_eq!((s.resolve(""), s.resolve("p")), (Ok(""), Ok("urn:p2")));
        s.close();
        assert_eq!((s.resolve(""), s.resolve("p")), (Ok("urn:d"), Ok("urn:p")));
        assert_eq!(s.resolve("xml"), Ok(XML_NS));
        assert!(s.resolve("q").is_err());
        assert_eq!(split("a:b"), Ok(("a", "b")));
        assert!(split(":b").is_err() && split("a:").is_err() && split("a:b:c").is_err());
    }
}
