//! What `study from-odm` tells a person on stderr: one line each, prefixed
//! - `phi:` an item guessed to be a direct identifier (made `phi: true`), with the reason;
//! - `not converted:` what the file says and the protocol cannot (a condition, a method, a range
//!   check per unit, ...), never dropped in silence;
//! - `note:` how something was read when more than one reading was possible (a range check read
//!   as the failing condition), and the summary.
//!
//! Every OID, name or text of the file is shown through [`printable`] (escaped, bounded); no value
//! of any subject is ever in the file's metadata, and none is printed.

use std::collections::BTreeMap;
use std::fmt;

use crate::printable::printable;

/// The kind of a line, its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Phi,
    NotConverted,
    Note,
}

impl Kind {
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Phi => "phi",
            Kind::NotConverted => "not converted",
            Kind::Note => "note",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub kind: Kind,
    pub text: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.prefix(), self.text)
    }
}

/// The most names an aggregated line lists; the rest are counted.
const MAX_LISTED: usize = 12;

/// The lines, in the order they were found, then the aggregated ones (one per reason).
#[derive(Default)]
pub struct Report {
    lines: Vec<Line>,
    grouped: BTreeMap<(Kind, String), Vec<String>>,
    last: Option<Line>,
}

impl Report {
    pub fn phi(&mut self, text: String) {
        self.push(Kind::Phi, text);
    }

    pub fn not_converted(&mut self, text: String) {
        self.push(Kind::NotConverted, text);
    }

    pub fn note(&mut self, text: String) {
        self.push(Kind::Note, text);
    }

    pub fn push(&mut self, kind: Kind, text: String) {
        let line = Line { kind, text };
        if !self.lines.contains(&line) {
            self.lines.push(line);
        }
    }

    /// The line printed last (the summary).
    pub fn last(&mut self, kind: Kind, text: String) {
        self.last = Some(Line { kind, text });
    }

    /// Adds `name` (shown already) to the one line of `reason`: `reason: a, b, c`.
    pub fn group(&mut self, kind: Kind, reason: &str, name: String) {
        let names = self.grouped.entry((kind, reason.to_string())).or_default();
        if !names.contains(&name) {
            names.push(name);
        }
    }

    /// How many `phi:` and `not converted:` lines there are (aggregated names each count).
    pub fn count(&self, kind: Kind) -> usize {
        let single = self.lines.iter().filter(|l| l.kind == kind).count();
        let grouped: usize = self
            .grouped
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, names)| names.len())
            .sum();
        single + grouped
    }

    /// Every line: the single ones in order, then one per aggregated reason, then the last.
    pub fn lines(&self) -> Vec<Line> {
        let mut out = self.lines.clone();
        for ((kind, reason), names) in &self.grouped {
            let shown: Vec<&str> = names.iter().take(MAX_LISTED).map(String::as_str).collect();
            let more = names.len().saturating_sub(MAX_LISTED);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            out.push(Line {
                kind: *kind,
                text: format!("{reason}: {}{tail}", shown.join(", ")),
            });
        }
        out.extend(self.last.clone());
        out
    }
}

/// An OID or name of the file as shown: escaped and bounded, in double quotes when it is empty or
/// holds white space, a comma or a colon (so a line still reads unambiguously).
pub fn shown(name: &str) -> String {
    let p = printable(name);
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',' || c == ':') {
        format!("\"{p}\"")
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_prefixed_escaped_and_aggregated() {
        let mut r = Report::default();
        r.phi(format!("item {}: a name", shown("I.NAME\u{1b}[2J")));
        r.note("one".into());
        r.note("one".into());
        for i in 0..15 {
            r.group(
                Kind::NotConverted,
                "boolean code lists",
                shown(&format!("B{i}")),
            );
        }
        r.group(Kind::NotConverted, "boolean code lists", shown("B0"));
        let lines: Vec<String> = r.lines().iter().map(|l| l.to_string()).collect();
        assert_eq!(lines[0], "phi: item I.NAME\\u{1b}[2J: a name");
        assert_eq!(lines[1], "note: one");
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[2].starts_with("not converted: boolean code lists: B0, B1, "));
        assert!(lines[2].ends_with("B11 and 3 more"), "{}", lines[2]);
        assert_eq!(r.count(Kind::NotConverted), 15);
        assert_eq!(r.count(Kind::Phi), 1);
        assert_eq!(shown("SE.VISIT 1"), "\"SE.VISIT 1\"");
        assert_eq!(shown(""), "\"\"");
    }
}
