//! The seal of our headers: one HMAC over every `x-edc-*` header a copy carries, bound to the
//! message (its body's hash and its message id). A header is believed only under a seal that
//! matches: one an uploader wrote, altered, added to, or moved from another message, is not.
//!
//! ```text
//! copy made:    headers ─ ours added (count, uploader, reason...) ─ seal(all x-edc-*, body, id) ─> x-edc-seal
//! copy back:    open(headers, body, id) ─ seal matches? ─ yes: every x-edc-* believed ─ no: none is
//! ```
//! Its key is derived from the pseudonymisation key, which every replica shares and no uploader
//! knows. Only text (`LongString`) and 64-bit integer values can be sealed: a table with any other
//! type under our prefix is not ours.

use hmac::{Hmac, KeyInit, Mac};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use sha2::Sha256;

use super::{H_RETRIES, H_SEAL, H_UPLOADED_BY, OUR_PREFIX};

/// What the seal says of its version, so that another layout can never match this one.
const DOMAIN: &[u8] = b"edc-ingest header seal v2\0";

/// Makes and checks the seal of our headers (see the module's documentation).
#[derive(Clone)]
pub struct Seal {
    mac: Hmac<Sha256>,
}

/// The message a seal is bound to.
#[derive(Clone, Copy, Debug)]
pub struct Bound<'a> {
    pub body_sha256: &'a str,
    pub message_id: Option<&'a str>,
}

/// Our headers of a message, as its seal vouches for them.
#[derive(Debug, Default, PartialEq)]
pub struct Sealed(FieldTable);

impl Seal {
    pub fn new(key: &[u8]) -> Seal {
        Seal {
            mac: Hmac::new_from_slice(key).expect("HMAC takes a key of any length"),
        }
    }

    /// Seals every `x-edc-*` header of `headers` for this message: sets [`H_SEAL`]. Returns false,
    /// sealing nothing, if one of them has a type a seal cannot cover (never ours).
    pub fn seal(&self, headers: &mut FieldTable, message: Bound<'_>) -> bool {
        match self.mac(headers, message) {
            Some(mac) => {
                headers.insert(H_SEAL.into(), super::text(&crate::pipeline::hex(&mac)));
                true
            }
            None => false,
        }
    }

    /// Our headers in `properties`, if their seal matches this message and them; none otherwise.
    pub fn open(&self, properties: &BasicProperties, message: Bound<'_>) -> Sealed {
        let Some(headers) = properties.headers() else {
            return Sealed::default();
        };
        let given = match headers.inner().get(H_SEAL) {
            Some(AMQPValue::LongString(s)) => s.as_bytes(),
            _ => return Sealed::default(),
        };
        let Some(expected) = self.mac(headers, message) else {
            return Sealed::default();
        };
        let expected = crate::pipeline::hex(&expected);
        // Fixed-length hex; the lengths are compared first, then every byte.
        if given.len() != expected.len() || !constant_time_eq(given, expected.as_bytes()) {
            return Sealed::default();
        }
        let ours: std::collections::BTreeMap<_, _> =
            ours(headers).map(|(k, v)| (k.clone(), v.clone())).collect();
        Sealed(ours.into())
    }

    /// The MAC of this message's `x-edc-*` headers (less the seal), in the table's order (by name).
    fn mac(&self, headers: &FieldTable, message: Bound<'_>) -> Option<[u8; 16]> {
        let mut mac = self.mac.clone();
        mac.update(DOMAIN);
        field(&mut mac, message.body_sha256.as_bytes());
        match message.message_id {
            None => mac.update(&[0]),
            Some(id) => {
                mac.update(&[1]);
                field(&mut mac, id.as_bytes());
            }
        }
        for (name, value) in ours(headers) {
            field(&mut mac, name.as_str().as_bytes());
            match value {
                AMQPValue::LongString(s) => {
                    mac.update(b"S");
                    field(&mut mac, s.as_bytes());
                }
                AMQPValue::LongLongInt(n) => {
                    mac.update(b"l");
                    mac.update(&n.to_be_bytes());
                }
                _ => return None,
            }
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        Some(out)
    }
}

impl Sealed {
    /// A sealed text header.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.0.inner().get(name)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => None,
        }
    }

    /// A sealed integer header.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.0.inner().get(name)? {
            AMQPValue::LongLongInt(n) => Some(*n),
            _ => None,
        }
    }

    /// Attempts that already failed ([`H_RETRIES`]); 0 when none is sealed.
    pub fn failed_attempts(&self) -> u32 {
        self.int(H_RETRIES)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    }

    /// Who uploaded the message, as RabbitMQ verified it on its first delivery ([`H_UPLOADED_BY`]).
    pub fn uploaded_by(&self) -> Option<&str> {
        self.text(H_UPLOADED_BY)
    }

    pub fn is_empty(&self) -> bool {
        self.0.inner().is_empty()
    }
}

/// The headers a seal covers: every one with our prefix, less the seal itself and the count of
/// headers left out to fit a frame (`wire::H_HEADERS_DROPPED`), which is added after sealing, as
/// the copy is published, and is never read back.
fn ours(headers: &FieldTable) -> impl Iterator<Item = (&lapin::types::ShortString, &AMQPValue)> {
    headers.inner().iter().filter(|(k, _)| {
        k.as_str().starts_with(OUR_PREFIX)
            && k.as_str() != H_SEAL
            && k.as_str() != crate::broker::wire::H_HEADERS_DROPPED
    })
}

/// A length-prefixed field: no two sequences of fields hash alike.
fn field(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(bytes);
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::super::{H_ATTEMPTS, H_KIND, text};
    use super::*;

    const M1: Bound<'static> = Bound {
        body_sha256: "abc",
        message_id: Some("m1"),
    };

    fn sealed(seal: &Seal, pairs: &[(&str, AMQPValue)], message: Bound<'_>) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("x-site".into(), text("not ours"));
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        assert!(seal.seal(&mut t, message));
        t
    }

    fn props(t: FieldTable) -> BasicProperties {
        BasicProperties::default().with_headers(t)
    }

    fn with(mut t: FieldTable, name: &str, value: AMQPValue) -> BasicProperties {
        t.insert(name.into(), value);
        props(t)
    }

    #[test]
    fn every_sealed_header_is_believed_for_this_very_message() {
        let seal = Seal::new(&[9u8; 32]);
        let t = sealed(
            &seal,
            &[
                (H_RETRIES, AMQPValue::LongLongInt(3)),
                (H_UPLOADED_BY, text("site-17")),
            ],
            M1,
        );
        let ours = seal.open(&props(t.clone()), M1);
        assert_eq!(ours.failed_attempts(), 3);
        assert_eq!(ours.uploaded_by(), Some("site-17"));
        // Headers without our prefix are neither covered nor needed: they may change.
        assert_eq!(
            seal.open(&with(t, "x-site", text("changed")), M1)
                .failed_attempts(),
            3
        );
    }

    #[test]
    fn a_header_altered_added_or_moved_from_another_message_is_not_believed() {
        let seal = Seal::new(&[9u8; 32]);
        let pairs = [
            (H_RETRIES, AMQPValue::LongLongInt(3)),
            (H_UPLOADED_BY, text("site-17")),
        ];
        let t = sealed(&seal, &pairs, M1);
        let nothing = |p: &BasicProperties, m: Bound<'_>| seal.open(p, m).is_empty();
        // Moved: to another body, another id, a message without one.
        let other_body = Bound {
            body_sha256: "abd",
            ..M1
        };
        assert!(nothing(&props(t.clone()), other_body));
        let other_id = Bound {
            message_id: Some("m2"),
            ..M1
        };
        assert!(nothing(&props(t.clone()), other_id));
        let no_id = Bound {
            message_id: None,
            ..M1
        };
        assert!(nothing(&props(t.clone()), no_id));
        // Altered: the count, the uploader, its type; one added; one taken away.
        assert!(nothing(
            &with(t.clone(), H_RETRIES, AMQPValue::LongLongInt(0)),
            M1
        ));
        assert!(nothing(
            &with(t.clone(), H_RETRIES, AMQPValue::LongInt(3)),
            M1
        ));
        assert!(nothing(
            &with(t.clone(), H_UPLOADED_BY, text("mallory")),
            M1
        ));
        assert!(nothing(&with(t.clone(), H_KIND, text("conflict")), M1));
        let mut fewer = FieldTable::default();
        for (k, v) in t.inner() {
            if k.as_str() != H_UPLOADED_BY {
                fewer.insert(k.clone(), v.clone());
            }
        }
        assert!(nothing(&props(fewer), M1));
        // Made up, missing, of another type; another key (a replica with another pseudonymisation key).
        assert!(nothing(&with(t.clone(), H_SEAL, text(&"0".repeat(32))), M1));
        assert!(nothing(
            &with(t.clone(), H_SEAL, AMQPValue::LongLongInt(0)),
            M1
        ));
        let mut unsealed = FieldTable::default();
        for (k, v) in pairs {
            unsealed.insert(k.into(), v);
        }
        assert!(nothing(&props(unsealed), M1));
        assert!(Seal::new(&[8u8; 32]).open(&props(t), M1).is_empty());
    }

    #[test]
    fn the_count_of_headers_left_out_to_fit_a_frame_does_not_break_the_seal() {
        let seal = Seal::new(&[9u8; 32]);
        let mut t = sealed(&seal, &[(H_RETRIES, AMQPValue::LongLongInt(2))], M1);
        t.insert(
            crate::broker::wire::H_HEADERS_DROPPED.into(),
            AMQPValue::LongLongInt(1),
        );
        assert_eq!(seal.open(&props(t), M1).failed_attempts(), 2);
    }

    #[test]
    fn only_text_and_integers_can_be_sealed_and_counts_out_of_range_are_zero() {
        let seal = Seal::new(&[9u8; 32]);
        let mut t = FieldTable::default();
        t.insert(H_ATTEMPTS.into(), AMQPValue::Boolean(true));
        assert!(!seal.seal(&mut t, M1));
        assert!(!t.inner().contains_key(H_SEAL));
        for n in [-1, i64::from(u32::MAX) + 1, i64::MIN, i64::MAX] {
            let t = sealed(&seal, &[(H_RETRIES, AMQPValue::LongLongInt(n))], M1);
            assert_eq!(seal.open(&props(t), M1).failed_attempts(), 0, "{n}");
        }
        assert_eq!(
            seal.open(&BasicProperties::default(), M1),
            Sealed::default()
        );
    }
}
