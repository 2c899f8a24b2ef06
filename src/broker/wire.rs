//! The content header as an uploader can shape it, and the size of the copies we publish of it.
//!
//! Every property and header of a delivery is the uploader's, and RabbitMQ checks little of it: not
//! that short strings are UTF-8, not how deep header tables nest; and it passes a content header on
//! in one frame as large as the uploader's own connection allowed (128 KiB by default), whatever
//! ours negotiated. The client library reads all of that without failing the connection, thanks to
//! the patches carried in `vendor/` (see `vendor/README.md`): a frame larger than our `frame_max` is
//! accepted; tables and arrays nested deeper than [`MAX_NESTING_DEPTH`] are kept as the bytes of
//! their encoding (so nothing that walks a header value, ours or the library's, recurses deeper);
//! short strings that are not UTF-8 are read lossily (U+FFFD, at most 255 bytes).
//!
//! What is left to us:
//! - [`fit`]: a copy we publish (a dead letter, a delayed retry, a postponed message, a dead letter
//!   put back) must fit in one content-header frame of the size OUR connection negotiated: AMQP
//!   never splits a header frame, and the broker closes the whole connection over a larger one
//!   (FRAME_ERROR). The uploader's largest headers give way first; ours always stay.
//! - [`text`]: a short string an uploader chose, as text PostgreSQL can store. NUL is valid UTF-8,
//!   so the client keeps it, but a `text` column refuses it (SQLSTATE 22021), and a refused write
//!   pauses consumption as if the database were down: one message id with a NUL in it stopped every
//!   replica.
//! - [`properties_of`]: the patched property parser on raw bytes, for tests and fuzz targets (any
//!   bytes in, never a panic).

use std::collections::BTreeSet;

use lapin::BasicProperties;
use lapin::protocol::basic::{gen_properties, parse_properties};
use lapin::types::generation::gen_value;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::publish::OUR_PREFIX;

pub use lapin::types::parsing::MAX_NESTING_DEPTH;

/// On a copy that had to leave headers out to fit in a frame ([`fit`]): how many of the uploader's.
pub const H_HEADERS_DROPPED: &str = "x-edc-headers-dropped";

/// A content-header frame's bytes besides the properties: frame type, channel and size (7); class,
/// weight and body size (12); the frame-end octet (1).
const HEADER_FRAME_OVERHEAD: usize = 20;

/// A short-string property (`message_id`, `reply_to`, `correlation_id`) as text the database can
/// store: each NUL becomes U+FFFD, as each byte that was not UTF-8 already did in the client.
pub fn text(s: &ShortString) -> String {
    s.as_str().replace('\0', "\u{fffd}")
}

/// The properties read from the bytes of a content header after its body size (property flags, then
/// the values), as the client library reads a delivery's; None if they are malformed or are
/// followed by anything. Never panics, whatever the bytes.
pub fn properties_of(bytes: &[u8]) -> Option<BasicProperties> {
    match parse_properties(bytes) {
        Ok(([], props)) => Some(props),
        _ => None,
    }
}

/// The encoding of `props`: property flags, then the values (what [`properties_of`] reads).
pub fn encode(props: &BasicProperties) -> Vec<u8> {
    match gen_properties(props)(Vec::new().into()) {
        Ok(ctx) => ctx.write,
        // Writing to a Vec does not fail; an empty encoding would only under-count a size.
        Err(_) => Vec::new(),
    }
}

/// The size of the content-header frame that carries `props`.
pub fn header_frame_len(props: &BasicProperties) -> usize {
    HEADER_FRAME_OVERHEAD + encode(props).len()
}

/// The bytes one header entry takes in a table: its key (length byte and bytes) and its value (type
/// byte and encoding).
fn entry_len(key: &ShortString, value: &AMQPValue) -> usize {
    let value = gen_value(value)(Vec::new().into())
        .map(|ctx| ctx.write.len())
        .unwrap_or(0);
    1 + key.as_str().len() + value
}

/// `props`, made to fit in one content-header frame of `frame_max` bytes (0: no limit): unchanged if
/// they do; else without the uploader's headers (every header but ours, `x-edc-*`), the largest
/// first, until they do, and with [`H_HEADERS_DROPPED`] saying how many went. The body and every
/// other property are kept. Only if our own headers and the other properties (at most 255 bytes
/// each) exceed the frame on their own does the result still not fit.
pub fn fit(props: BasicProperties, frame_max: u32) -> BasicProperties {
    let limit = frame_max as usize;
    let size = header_frame_len(&props);
    if limit == 0 || size <= limit {
        return props;
    }
    let Some(headers) = props.headers().clone() else {
        return props;
    };
    // The dropped-count header's own entry, at most: key, type byte, 8 bytes.
    let mut excess = size + 1 + H_HEADERS_DROPPED.len() + 9 - limit;
    let mut theirs: Vec<(usize, &ShortString)> = headers
        .inner()
        .iter()
        .filter(|(k, _)| !k.as_str().starts_with(OUR_PREFIX))
        .map(|(k, v)| (entry_len(k, v), k))
        .collect();
    // Largest first; among equals, in key order, so that the same headers always give way.
    theirs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut dropped = BTreeSet::new();
    for (len, key) in theirs {
        if excess == 0 {
            break;
        }
        dropped.insert(key);
        excess = excess.saturating_sub(len);
    }
    let mut kept = FieldTable::default();
    for (k, v) in headers.inner() {
        if !dropped.contains(&k) {
            kept.insert(k.clone(), v.clone());
        }
    }
    kept.insert(
        H_HEADERS_DROPPED.into(),
        AMQPValue::LongLongInt(dropped.len() as i64),
    );
    props.with_headers(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Property flags and values: `headers` only (flag bit 13), its table holding `entries`.
    fn with_headers(entries: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
        let mut table = Vec::new();
        for (k, v) in entries {
            table.push(k.len() as u8);
            table.extend_from_slice(k);
            table.extend_from_slice(v);
        }
        let mut out = (1u16 << 13).to_be_bytes().to_vec();
        out.extend_from_slice(&(table.len() as u32).to_be_bytes());
        out.extend(table);
        out
    }

    /// `depth` arrays, each holding the next, the innermost empty (5 bytes a level).
    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 * depth);
        for level in 0..depth {
            out.push(b'A');
            out.extend_from_slice(&(5 * (depth - 1 - level) as u32).to_be_bytes());
        }
        out
    }

    /// `depth` tables, each holding the next under the empty key (6 bytes a level).
    fn nested_tables(depth: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 * depth);
        for level in 0..depth {
            out.push(b'F');
            out.extend_from_slice(&(6 * (depth - 1 - level) as u32).to_be_bytes());
            if level + 1 < depth {
                out.push(0);
            }
        }
        out
    }

    fn long_string(n: usize) -> Vec<u8> {
        let mut out = vec![b'S'];
        out.extend_from_slice(&(n as u32).to_be_bytes());
        out.extend(std::iter::repeat_n(b'x', n));
        out
    }

    /// How many tables and arrays deep a value goes, the header table not counted, and its bottom.
    fn depth_of(mut v: &AMQPValue) -> (usize, &AMQPValue) {
        let mut depth = 0;
        loop {
            let next = match v {
                AMQPValue::FieldArray(a) => a.as_slice().first(),
                AMQPValue::FieldTable(t) => t.inner().values().next(),
                _ => return (depth, v),
            };
            depth += 1;
            match next {
                Some(inner) => v = inner,
                None => return (depth, v),
            }
        }
    }

    #[test]
    fn headers_nested_far_past_the_limit_parse_and_are_kept_as_bytes_below_it() {
        for (nested, level) in [
            (nested_arrays(20_000), 5),
            (nested_tables(20_000), 6),
            (nested_arrays(100), 5),
        ] {
            let bytes = with_headers(&[(b"deep", nested.clone())]);
            let props = properties_of(&bytes).expect("parses");
            let value = props
                .headers()
                .as_ref()
                .unwrap()
                .inner()
                .get("deep")
                .unwrap();
            // The header table is the first level: 31 more, then the rest as bytes.
            let (depth, bottom) = depth_of(value);
            assert_eq!(depth, MAX_NESTING_DEPTH - 1);
            let AMQPValue::ByteArray(kept) = bottom else {
                panic!("the level past the limit is kept as bytes, not {bottom:?}");
            };
            assert_eq!(kept.as_slice(), &nested[level * (MAX_NESTING_DEPTH - 1)..]);
            // Everything that walks the value stays within the limit: clone, compare, format,
            // encode, and read the encoding back.
            let copy = props.clone();
            assert_eq!(copy, props);
            assert!(format!("{props:?}").contains("ByteArray"));
            let again = properties_of(&encode(&props)).expect("the encoding reads back");
            assert_eq!(
                again.headers().as_ref().unwrap().inner().get("deep"),
                Some(value)
            );
        }
    }

    #[test]
    fn nesting_just_at_the_limit_is_parsed_whole() {
        let bytes = with_headers(&[(b"deep", nested_arrays(MAX_NESTING_DEPTH - 1))]);
        let props = properties_of(&bytes).unwrap();
        let value = props
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .get("deep")
            .unwrap();
        let (depth, bottom) = depth_of(value);
        assert_eq!(depth, MAX_NESTING_DEPTH - 1);
        assert!(matches!(bottom, AMQPValue::FieldArray(a) if a.as_slice().is_empty()));
    }

    #[test]
    fn every_short_string_property_that_is_not_utf8_reads_lossily() {
        // Flags bits 15..2: the short strings among them, and a message id of 255 invalid bytes.
        let short = [15, 14, 10, 9, 8, 7, 5, 4, 3, 2];
        for bit in short {
            let mut bytes = (1u16 << bit).to_be_bytes().to_vec();
            bytes.extend_from_slice(&[4, b'a', 0xff, 0xfe, b'z']);
            let p = properties_of(&bytes).unwrap_or_else(|| panic!("bit {bit} parses"));
            let got = [
                p.content_type(),
                p.content_encoding(),
                p.correlation_id(),
                p.reply_to(),
                p.expiration(),
                p.message_id(),
                p.kind(),
                p.user_id(),
                p.app_id(),
                p.cluster_id(),
            ]
            .into_iter()
            .flatten()
            .map(|s| s.as_str().to_string())
            .collect::<Vec<_>>();
            assert_eq!(got, vec!["a\u{fffd}\u{fffd}z".to_string()], "bit {bit}");
        }
        let mut bytes = (1u16 << 7).to_be_bytes().to_vec();
        bytes.push(255);
        bytes.extend(std::iter::repeat_n(0x80u8, 255));
        let p = properties_of(&bytes).unwrap();
        let id = p.message_id().as_ref().unwrap().as_str();
        assert_eq!(id, "\u{fffd}".repeat(85), "cut to 255 bytes");
        // Read lossily, written back as valid UTF-8 of the same length limit.
        assert_eq!(properties_of(&encode(&p)), Some(p));
    }

    #[test]
    fn a_header_key_that_is_not_utf8_reads_lossily() {
        let bytes = with_headers(&[(b"k\xc3", vec![b'V']), (b"ok", long_string(2))]);
        let p = properties_of(&bytes).unwrap();
        let keys: Vec<&str> = p
            .headers()
            .as_ref()
            .unwrap()
            .inner()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["k\u{fffd}", "ok"]);
    }

    #[test]
    fn a_nul_in_a_short_string_becomes_a_replacement_character_and_nothing_else_changes() {
        assert_eq!(text(&"a\0b\0".into()), "a\u{fffd}b\u{fffd}");
        assert_eq!(text(&"plain, é\u{fffd}".into()), "plain, é\u{fffd}");
        let longest = "\0".repeat(255);
        assert_eq!(text(&longest.as_str().into()), "\u{fffd}".repeat(255));
    }

    #[test]
    fn malformed_or_trailing_bytes_are_refused_never_a_panic() {
        assert_eq!(properties_of(&[]), None);
        assert_eq!(
            properties_of(&[0x80, 0x00, 9, b'a']),
            None,
            "short string cut short"
        );
        assert_eq!(properties_of(&[0, 0, 1]), None, "trailing byte");
        assert_eq!(
            properties_of(&with_headers(&[(b"k", vec![b'?'])])),
            None,
            "unknown type"
        );
        assert!(properties_of(&[0, 0]).is_some());
    }

    fn ours_and_theirs(theirs: &[(&str, usize)]) -> BasicProperties {
        let mut h = FieldTable::default();
        h.insert("x-edc-error".into(), AMQPValue::LongString("why".into()));
        for (k, n) in theirs {
            h.insert((*k).into(), AMQPValue::LongString("x".repeat(*n).into()));
        }
        BasicProperties::default()
            .with_message_id("m".into())
            .with_headers(h)
    }

    fn keys(p: &BasicProperties) -> Vec<String> {
        p.headers()
            .as_ref()
            .unwrap()
            .inner()
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    #[test]
    fn a_copy_that_fits_is_left_as_it_is() {
        let p = ours_and_theirs(&[("traceparent", 55), ("big", 30_000)]);
        assert_eq!(fit(p.clone(), 32 * 1024), p);
        assert_eq!(fit(p.clone(), 0), p, "0: no limit");
        assert_eq!(
            fit(BasicProperties::default(), 4096),
            BasicProperties::default()
        );
    }

    #[test]
    fn a_copy_too_large_for_the_frame_loses_the_uploaders_largest_headers_first() {
        let p = ours_and_theirs(&[("traceparent", 55), ("big", 40_000), ("bigger", 100_000)]);
        let fitted = fit(p.clone(), 32 * 1024);
        assert!(header_frame_len(&fitted) <= 32 * 1024);
        assert_eq!(
            keys(&fitted),
            ["traceparent", "x-edc-error", H_HEADERS_DROPPED]
        );
        let h = fitted.headers().as_ref().unwrap().inner();
        assert_eq!(h.get(H_HEADERS_DROPPED), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(fitted.message_id(), p.message_id());
        // With a larger frame, only what must go goes.
        let fitted = fit(p, 128 * 1024);
        assert!(header_frame_len(&fitted) <= 128 * 1024);
        assert_eq!(
            keys(&fitted),
            ["big", "traceparent", "x-edc-error", H_HEADERS_DROPPED]
        );
    }

    #[test]
    fn a_copy_just_over_the_frame_drops_one_header_and_fits_with_the_count() {
        let base = header_frame_len(&ours_and_theirs(&[("a", 0), ("b", 0)]));
        // One byte over the frame; the count header then adds its own.
        let room = 4096 - base;
        let p = ours_and_theirs(&[("a", 10), ("b", room - 9)]);
        assert!(header_frame_len(&p) > 4096);
        let fitted = fit(p, 4096);
        assert!(
            header_frame_len(&fitted) <= 4096,
            "{}",
            header_frame_len(&fitted)
        );
        assert_eq!(keys(&fitted), ["a", "x-edc-error", H_HEADERS_DROPPED]);
    }

    #[test]
    fn the_frame_size_counts_every_byte_of_the_header_frame() {
        // class, weight, body size, flags; no property: 7 + 12 + 2 + 1.
        assert_eq!(header_frame_len(&BasicProperties::default()), 22);
        let p = BasicProperties::default().with_message_id("abc".into());
        assert_eq!(header_frame_len(&p), 22 + 1 + 3);
    }
}
