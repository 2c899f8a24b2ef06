//! Values an uploader chose (a message id, a header, a reply address), made safe to print: in a log
//! line, a terminal or a report. Control characters are escaped, so such a value can neither fake a
//! log line nor drive a terminal, and it is cut to a bounded length.

use std::fmt;

/// The longest such value shown, in characters; the rest is replaced by `...`.
pub const MAX_CHARS: usize = 120;

/// `value`, escaped and bounded for printing.
pub fn printable(value: &str) -> String {
    Printable(value).to_string()
}

/// Displays the wrapped text escaped and bounded (see the module's text).
#[derive(Clone, Copy)]
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for (i, c) in self.0.chars().enumerate() {
            if i == MAX_CHARS {
                return f.write_str("...");
            }
            if c.is_control() || is_invisible_format(c) {
                for e in c.escape_unicode() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Characters that change how text around them is shown without being visible themselves: the
/// bidirectional overrides and isolates, zero-width characters, the byte-order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_kept() {
        assert_eq!(printable("msg-42 ok"), "msg-42 ok");
        assert_eq!(printable("a\nb"), "a\\u{a}b");
        assert_eq!(printable("\x1b[2J\x07"), "\\u{1b}[2J\\u{7}");
        assert_eq!(printable("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(printable("Zoë"), "Zoë");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "a".repeat(MAX_CHARS + 50);
        let shown = printable(&long);
        assert_eq!(shown.len(), MAX_CHARS + 3);
        assert!(shown.ends_with("..."));
    }
}
