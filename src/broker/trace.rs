//! W3C trace context (`traceparent`, `tracestate`) carried in AMQP headers: read from an upload,
//! carried on to what the daemon publishes for the record (its events and callback).
//!
//! Both headers are an uploader's values, so they are taken only in their standard form: a
//! `traceparent` of version 00 with non-zero ids, a `tracestate` of at most 512 printable ASCII
//! characters. Anything else is dropped, never carried on.

use lapin::BasicProperties;
use lapin::types::AMQPValue;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The trace context of a message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The context in a message's headers, if well-formed.
    pub fn of(properties: &BasicProperties) -> TraceContext {
        // Nothing longer than a valid tracestate is even copied (a header can be megabytes).
        let text = |name: &str| -> Option<String> {
            let bytes = match properties.headers().as_ref()?.inner().get(name)? {
                AMQPValue::LongString(s) => s.as_bytes(),
                AMQPValue::ShortString(s) => s.as_str().as_bytes(),
                _ => return None,
            };
            if bytes.len() > MAX_TRACESTATE {
                return None;
            }
            std::str::from_utf8(bytes).ok().map(str::to_string)
        };
        let traceparent = text(TRACEPARENT).filter(|t| valid_traceparent(t));
        // A tracestate means nothing without its traceparent.
        let tracestate = traceparent
            .as_ref()
            .and_then(|_| text(TRACESTATE))
            .filter(|t| valid_tracestate(t));
        TraceContext {
            traceparent,
            tracestate,
        }
    }

    /// The context to carry on to what is published for a message handled in `span`: the span's
    /// own context when traces are exported (a child of this one), else this one as it came.
    pub fn onward(&self, span: &tracing::Span) -> TraceContext {
        match crate::telemetry::context_of(span) {
            Some((traceparent, tracestate)) => TraceContext {
                traceparent: Some(traceparent),
                tracestate,
            },
            None => self.clone(),
        }
    }

    /// `properties` with this context in their headers (replacing any there); as they are if there
    /// is none.
    pub fn stamp(&self, properties: BasicProperties) -> BasicProperties {
        let Some(traceparent) = &self.traceparent else {
            return properties;
        };
        // Rebuilt without the old context: FieldTable has no remove.
        let mut headers = lapin::types::FieldTable::default();
        if let Some(old) = properties.headers() {
            for (k, v) in old.inner() {
                if k.as_str() != TRACEPARENT && k.as_str() != TRACESTATE {
                    headers.insert(k.clone(), v.clone());
                }
            }
        }
        headers.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString(traceparent.as_str().into()),
        );
        if let Some(state) = &self.tracestate {
            headers.insert(
                TRACESTATE.into(),
                AMQPValue::LongString(state.as_str().into()),
            );
        }
        properties.with_headers(headers)
    }

    /// The trace id, if there is a context (and it is well-formed: the fields are public).
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent.as_deref()?.get(3..35)
    }

    /// As the AMQP headers of the events it is carried on: a JSON object, or null.
    pub fn as_headers(&self) -> serde_json::Value {
        let mut headers = serde_json::Map::new();
        if let Some(t) = &self.traceparent {
            headers.insert(TRACEPARENT.into(), t.clone().into());
        }
        if let Some(t) = &self.tracestate {
            headers.insert(TRACESTATE.into(), t.clone().into());
        }
        if headers.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::Value::Object(headers)
        }
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower case, ids not all zero.
pub fn valid_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if *version == "00" && hex(trace, 32) && hex(parent, 16) && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0') && parent.bytes().any(|b| b != b'0'))
}

/// The longest `tracestate` carried on, in bytes (the W3C's limit for what must be propagated).
const MAX_TRACESTATE: usize = 512;

fn valid_tracestate(t: &str) -> bool {
    !t.is_empty() && t.len() <= MAX_TRACESTATE && t.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldTable;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn props(pairs: &[(&str, &str)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), AMQPValue::LongString((*v).into()));
        }
        BasicProperties::default().with_headers(t)
    }

    #[test]
    fn a_standard_context_is_taken_and_carried_on() {
        let c = TraceContext::of(&props(&[(TRACEPARENT, PARENT), (TRACESTATE, "vendor=x")]));
        assert_eq!(c.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            c.as_headers(),
            serde_json::json!({"traceparent": PARENT, "tracestate": "vendor=x"})
        );
    }

    #[test]
    fn a_copy_carries_the_context_and_no_other_one() {
        let old = props(&[
            (
                TRACEPARENT,
                "00-11111111111111111111111111111111-2222222222222222-01",
            ),
            (TRACESTATE, "old=1"),
            ("x-site", "kept"),
        ]);
        let c = TraceContext {
            traceparent: Some(PARENT.into()),
            tracestate: None,
        };
        let stamped = c.stamp(old.clone());
        assert_eq!(
            TraceContext::of(&stamped),
            c,
            "the old tracestate goes with the old parent"
        );
        let h = stamped.headers().as_ref().unwrap().inner();
        assert!(h.contains_key("x-site"));
        assert_eq!(
            TraceContext::default().stamp(old.clone()),
            old,
            "no context: as it was"
        );
        // Traces not exported: the uploader's context is what is carried on.
        assert_eq!(c.onward(&tracing::Span::none()), c);
    }

    #[test]
    fn anything_else_is_dropped() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n",
            "Ada Lovelace",
        ] {
            let c = TraceContext::of(&props(&[(TRACEPARENT, bad), (TRACESTATE, "a=b")]));
            assert_eq!(c, TraceContext::default(), "{bad:?}");
        }
        let c = TraceContext::of(&props(&[(TRACEPARENT, PARENT), (TRACESTATE, "x\u{1b}[2J")]));
        assert_eq!(c.tracestate, None);
        for state in ["a=\0", &"a".repeat(513)] {
            let c = TraceContext::of(&props(&[(TRACEPARENT, PARENT), (TRACESTATE, state)]));
            assert_eq!(c.tracestate, None, "{state:?}");
        }
        // Of another type, or not UTF-8: dropped.
        let mut t = FieldTable::default();
        t.insert(TRACEPARENT.into(), AMQPValue::LongLongInt(1));
        assert_eq!(
            TraceContext::of(&BasicProperties::default().with_headers(t)),
            TraceContext::default()
        );
        let mut t = FieldTable::default();
        t.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString(b"00-\xff".to_vec().into()),
        );
        assert_eq!(
            TraceContext::of(&BasicProperties::default().with_headers(t)),
            TraceContext::default()
        );
        // A context made by hand, not read: no panic on a malformed one.
        let odd = TraceContext {
            traceparent: Some("00-é".into()),
            tracestate: None,
        };
        assert_eq!(odd.trace_id(), None);
        assert_eq!(
            TraceContext::default().as_headers(),
            serde_json::Value::Null
        );
    }
}
