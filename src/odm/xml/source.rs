//! The bytes under the XML parser. A [`BufRead`] of its own around the input that does what the
//! parser cannot be asked to: it refuses UTF-16 and UTF-32 before the first byte is parsed,
//! transcodes a declared ISO-8859-1 to UTF-8 as it goes, counts lines and columns, and bounds how
//! much one XML event may consume: past the allowance it answers with an error instead of more
//! bytes, so the parser's buffer cannot grow past the cap whatever the input holds.
//!
//! The reader marks the start of each event ([`Source::mark`]); the window and the first bytes of
//! the event (what tells a comment from a CDATA section) are counted from there, and lines and
//! columns up to there.

use std::io::{self, BufRead, Read};

use crate::odm::model::Position;

/// Bytes taken from the input at a time.
const CHUNK: usize = 64 * 1024;
/// How many bytes of an event are kept to tell its kind (`<![CDATA[` is the longest).
const FIRST: usize = 9;

/// Why the source stopped answering; the reader turns it into a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// The current event consumed its whole allowance.
    Cap,
    /// The input starts like UTF-16 or UTF-32 (with or without a byte-order mark).
    WideEncoding { bom: bool },
    /// A byte above 0x7F in a document declared US-ASCII.
    NotAscii,
    /// The input could not be read.
    Io(io::ErrorKind),
}

pub(super) struct Source<R> {
    inner: R,
    /// The bytes taken from the input (transcoded from ISO-8859-1 when declared so); the parser
    /// has consumed them up to `start`, lines and columns are counted up to `counted`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    counted: usize,
    sniffed: bool,
    latin1: bool,
    ascii: bool,
    /// Bytes consumed since the mark, and how many the current event may consume.
    window: u64,
    allowance: u64,
    first: [u8; FIRST],
    first_len: usize,
    fault: Option<Fault>,
    /// 0-based line, and characters since the line's start, at `counted`.
    line: u64,
    column: u64,
    mark: Position,
    /// Bytes taken from the input (before transcoding).
    taken: u64,
}

impl<R: BufRead> Source<R> {
    /// `cap`: the most bytes one event may consume.
    pub(super) fn new(inner: R, cap: usize) -> Source<R> {
        Source {
            inner,
            buf: Vec::with_capacity(2 * CHUNK),
            start: 0,
            end: 0,
            counted: 0,
            sniffed: false,
            latin1: false,
            ascii: false,
            window: 0,
            // One more than the cap: the parser must be able to see the byte that ends an event
            // of exactly `cap` bytes (the `<` after a text).
            allowance: cap as u64 + 1,
            first: [0; FIRST],
            first_len: 0,
            fault: None,
            line: 0,
            column: 0,
            mark: Position { line: 1, column: 1 },
            taken: 0,
        }
    }

    /// The start of a new event: here. Lines and columns are counted up to here, once per event
    /// rather than once per read of the parser.
    pub(super) fn mark(&mut self) {
        self.count_to(self.start);
        self.window = 0;
        self.first_len = 0;
        self.mark = Position {
            line: self.line + 1,
            column: self.column + 1,
        };
    }

    fn count_to(&mut self, to: usize) {
        (self.line, self.column) = advance((self.line, self.column), &self.buf[self.counted..to]);
        self.counted = to;
    }

    /// Where the current event started.
    pub(super) fn marked(&self) -> Position {
        self.mark
    }

    /// Bytes the current event consumed so far.
    pub(super) fn window(&self) -> u64 {
        self.window
    }

    /// The first bytes of the current event.
    pub(super) fn first(&self) -> &[u8] {
        &self.first[..self.first_len]
    }

    pub(super) fn take_fault(&mut self) -> Option<Fault> {
        self.fault.take()
    }

    /// Bytes taken from the input so far.
    pub(super) fn taken(&self) -> u64 {
        self.taken
    }

    /// From now on the input is ISO-8859-1 (the declaration said so): each byte is the code point
    /// of the same number. The bytes taken but not consumed yet are transcoded too.
    pub(super) fn set_latin1(&mut self) {
        if self.latin1 {
            return;
        }
        self.latin1 = true;
        let rest: Vec<u8> = self.buf[self.start..self.end].to_vec();
        self.buf.truncate(self.start);
        latin1_to_utf8(&rest, &mut self.buf);
        self.end = self.buf.len();
    }

    /// From now on the input is US-ASCII (the declaration said so): read as UTF-8, of which it is
    /// the subset, and a byte above 0x7F is refused when the parser comes to it.
    pub(super) fn set_ascii(&mut self) {
        self.ascii = true;
    }

    fn fail(&mut self, fault: Fault) -> io::Error {
        self.fault = Some(fault);
        io::Error::other("refused by the ODM reader")
    }

    /// Takes the next chunk of the input, once the parser consumed all of the last one (or to
    /// reach `want` bytes in all, for the first look).
    fn refill(&mut self, want: usize) -> io::Result<()> {
        if self.start == self.end {
            self.count_to(self.end);
            self.buf.clear();
            (self.start, self.end, self.counted) = (0, 0, 0);
        }
        while self.end - self.start < want {
            let chunk = loop {
                match self.inner.fill_buf() {
                    Ok(chunk) => break chunk,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.fail(Fault::Io(e.kind()))),
                }
            };
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len().min(CHUNK);
            if self.latin1 {
                latin1_to_utf8(&chunk[..n], &mut self.buf);
            } else {
                self.buf.extend_from_slice(&chunk[..n]);
            }
            self.inner.consume(n);
            self.taken += n as u64;
            self.end = self.buf.len();
        }
        Ok(())
    }

    /// Looks at the first bytes once: a UTF-8 byte-order mark is dropped, UTF-16 and UTF-32 are
    /// refused.
    fn sniff(&mut self) -> io::Result<()> {
        self.sniffed = true;
        self.refill(4)?;
        let head = &self.buf[..self.end.min(4)];
        if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
            (self.start, self.counted) = (3, 3);
            return Ok(());
        }
        let bom = head.starts_with(&[0xFF, 0xFE]) || head.starts_with(&[0xFE, 0xFF]);
        let wide = head.starts_with(&[0x00, 0x3C])
            || head.starts_with(&[0x3C, 0x00])
            || head.starts_with(&[0x00, 0x00]);
        if bom || wide {
            return Err(self.fail(Fault::WideEncoding { bom }));
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.fault.is_some() {
            return Err(io::Error::other("refused by the ODM reader"));
        }
        if !self.sniffed {
            self.sniff()?;
        }
        if self.window >= self.allowance {
            return Err(self.fail(Fault::Cap));
        }
        if self.start == self.end {
            self.refill(1)?;
        }
        let room = (self.allowance - self.window).min(usize::MAX as u64) as usize;
        let mut end = self.end.min(self.start.saturating_add(room));
        if self.ascii {
            // Hand over the ASCII bytes only: the piece holding another one is refused.
            if let Some(i) = self.buf[self.start..end].iter().position(|b| *b > 0x7F) {
                if i == 0 {
                    return Err(self.fail(Fault::NotAscii));
                }
                end = self.start + i;
            }
        }
        Ok(&self.buf[self.start..end])
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        if self.first_len < FIRST {
            let take = (FIRST - self.first_len).min(n);
            self.first[self.first_len..self.first_len + take]
                .copy_from_slice(&self.buf[self.start..self.start + take]);
            self.first_len += take;
        }
        self.window += n as u64;
        self.start += n;
    }
}

/// (line, column) after `bytes` of UTF-8: a `\n` starts a line, every byte but a continuation
/// byte (`10xxxxxx`) starts a character. Eight bytes at a time, as this runs over every byte read.
fn advance((mut line, mut column): (u64, u64), bytes: &[u8]) -> (u64, u64) {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const NEWLINES: u64 = 0x0A0A_0A0A_0A0A_0A0A;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut le = [0u8; 8];
        le.copy_from_slice(word);
        let w = u64::from_le_bytes(le);
        // The high bit of each byte that is 0 after the XOR, that is, of each newline.
        let x = w ^ NEWLINES;
        let newline = !(((x & LOW7) + LOW7) | x | LOW7);
        // The high bit of each continuation byte: bit 7 set, bit 6 clear.
        let continuation = w & !(w << 1) & HIGH;
        if newline == 0 {
            column += 8 - u64::from(continuation.count_ones());
        } else {
            line += u64::from(newline.count_ones());
            let last = (63 - newline.leading_zeros()) / 8;
            let after = if last == 7 {
                0
            } else {
                HIGH << ((last + 1) * 8)
            };
            column = u64::from(7 - last) - u64::from((continuation & after).count_ones());
        }
    }
    for &b in words.remainder() {
        if b == b'\n' {
            line += 1;
            column = 0;
        } else if b & 0xC0 != 0x80 {
            column += 1;
        }
    }
    (line, column)
}

/// ISO-8859-1 to UTF-8: each byte is the code point of its number.
fn latin1_to_utf8(input: &[u8], out: &mut Vec<u8>) {
    for &b in input {
        if b < 0x80 {
            out.push(b);
        } else {
            out.push(0xC0 | (b >> 6));
            out.push(0x80 | (b & 0x3F));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(source: &mut Source<&[u8]>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let chunk = source.fill_buf()?.to_vec();
            if chunk.is_empty() {
                return Ok(out);
            }
            source.consume(chunk.len());
            out.extend_from_slice(&chunk);
        }
    }

    #[test]
    fn latin1_becomes_utf8_and_a_utf8_bom_is_dropped() {
        let mut out = Vec::new();
        latin1_to_utf8(b"Zo\xeb \xff", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "Zoë ÿ");
        let mut s = Source::new(&b"\xEF\xBB\xBF<a/>"[..], 100);
        assert_eq!(all(&mut s).unwrap(), b"<a/>");
    }

    #[test]
    fn wide_encodings_are_refused_before_anything_is_read() {
        for (input, bom) in [
            (&b"\xFF\xFE<\x00a\x00"[..], true),
            (&b"\xFE\xFF\x00<\x00a"[..], true),
            (&b"<\x00?\x00x\x00"[..], false),
            (&b"\x00\x00\x00<"[..], false),
        ] {
            let mut s = Source::new(input, 100);
            assert!(s.fill_buf().is_err());
            assert_eq!(s.take_fault(), Some(Fault::WideEncoding { bom }));
        }
    }

    #[test]
    fn us_ascii_hands_over_ascii_only() {
        let mut s = Source::new(&b"abcd\xe9f"[..], 100);
        s.set_ascii();
        let mut got = Vec::new();
        while let Ok(chunk) = s.fill_buf() {
            let chunk = chunk.to_vec();
            s.consume(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, b"abcd");
        assert_eq!(s.take_fault(), Some(Fault::NotAscii));
    }

    #[test]
    fn an_event_gets_its_allowance_and_no_more() {
        let input = vec![b'x'; 1000];
        let mut s = Source::new(&input[..], 10);
        s.mark();
        let mut got = 0;
        while let Ok(chunk) = s.fill_buf() {
            let n = chunk.len();
            s.consume(n);
            got += n;
        }
        assert_eq!(got, 11);
        assert_eq!(s.take_fault(), Some(Fault::Cap));
    }

    /// The word-at-a-time count agrees with the plain one on every mix of newlines, ASCII and
    /// multi-byte characters, at every alignment.
    #[test]
    fn lines_and_columns_count_eight_bytes_at_a_time_as_one_by_one() {
        let plain = |(mut line, mut column): (u64, u64), bytes: &[u8]| {
            for c in std::str::from_utf8(bytes).unwrap().chars() {
                if c == '\n' {
                    line += 1;
                    column = 0;
                } else {
                    column += 1;
                }
            }
            (line, column)
        };
        let pieces = ["a", "\n", "é", "€", "𝄞", "xyz", "\n\n", "\t"];
        let mut text = String::new();
        for i in 0..400usize {
            text.push_str(pieces[(i * 7 + i / 3) % pieces.len()]);
            let bytes = text.as_bytes();
            for start in (0..bytes.len())
                .filter(|s| text.is_char_boundary(*s))
                .take(12)
            {
                assert_eq!(
                    advance((3, 5), &bytes[start..]),
                    plain((3, 5), &bytes[start..])
                );
            }
        }
    }

    #[test]
    fn lines_and_columns_count_characters() {
        let mut s = Source::new("ab\nçd\n€x".as_bytes(), 100);
        s.mark();
        all(&mut s).unwrap();
        s.mark();
        assert_eq!(s.marked(), Position { line: 3, column: 3 });
    }
}
