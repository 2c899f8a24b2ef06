//! AMQP properties and header tables: as the daemon reads a delivery's into its `Inbound`, and as
//! the dlq tools read a dead letter's.
//!
//! Input: two bytes (big-endian) giving the length of the properties' encoding (what follows a
//! content header's body size: property flags, then values), that encoding, then the body.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::BasicProperties;
use lapin::types::AMQPValue;
use serde_json::Value;

use super::{MAX_BODY, demo_registry, distinctive, pseudonymizer};
use crate::broker::inbound::{published_at, reply_fault, storable, upload_batch};
use crate::broker::publish::{Bound, OUR_PREFIX, Seal};
use crate::broker::trace::{TraceContext, valid_traceparent};
use crate::broker::wire::{encode, fit, header_frame_len, properties_of};
use crate::pipeline::{prepare, sha256_hex};
use crate::store::ingest::Reply;

/// The properties and the body of an input, if its properties parse.
fn split(data: &[u8]) -> Option<(BasicProperties, &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len)).min(rest.len());
    let (encoded, body) = rest.split_at(len);
    // Any bytes at all: None or properties, never a panic.
    let props = properties_of(encoded)?;
    // Parse, encode, parse: the same encoding (compared as bytes: a float header may be NaN).
    let again = properties_of(&encode(&props)).expect("our own encoding parses");
    assert_eq!(
        encode(&again),
        encode(&props),
        "properties do not round-trip"
    );
    Some((props, body))
}

/// The text values of the headers, at the top level (what a reason might be tempted to quote).
fn header_texts(props: &BasicProperties) -> Vec<String> {
    let Some(h) = props.headers() else {
        return Vec::new();
    };
    h.inner()
        .values()
        .filter_map(|v| match v {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        })
        .collect()
}

pub fn amqp_inbound(data: &[u8]) {
    let Some((props, body)) = split(data) else {
        return;
    };
    // What `Inbound::new` reads.
    let raw_id = props.message_id().as_ref().map(|m| m.as_str());
    let _ = raw_id.map(storable);
    if let Some(to) = props.reply_to().as_ref().map(|r| r.as_str()) {
        let reply = Reply {
            to: to.to_string(),
            correlation_id: props.correlation_id().as_ref().map(|c| c.to_string()),
        };
        let _ = reply_fault(&reply);
    }
    let trace = TraceContext::of(&props);
    if let Some(t) = &trace.traceparent {
        assert!(valid_traceparent(t), "a traceparent kept that is not valid");
    }
    if let Some(s) = &trace.tracestate {
        assert!(s.len() <= 512 && s.chars().all(|c| c.is_ascii() && !c.is_ascii_control()));
    }
    let body_sha256 = sha256_hex(body);
    let bound = Bound {
        body_sha256: &body_sha256,
        message_id: raw_id.filter(|id| storable(id)),
    };
    let ours = Seal::new(b"fuzz seal key").open(&props, bound);
    let _ = (ours.failed_attempts(), ours.uploaded_by());
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if let Some(at) = published_at(&props, now) {
        assert!(
            at <= now + Duration::from_secs(300),
            "a publication time in the future"
        );
        assert!(
            at >= now - Duration::from_secs(7 * 24 * 3600),
            "a publication time too old"
        );
    }
    let _ = published_at(&props, SystemTime::now());
    // The batch headers: refused by name, never quoting a value.
    if let Err(refused) = upload_batch(&props) {
        for v in header_texts(&props) {
            if distinctive(&v) {
                assert!(
                    !refused.reason.contains(v.trim()),
                    "a reason quotes a header"
                );
            }
        }
    }
    // The copies we publish fit in a frame; ours stay, theirs give way.
    for frame_max in [4096u32, 131_072] {
        let fitted = fit(props.clone(), frame_max);
        let ours_in = |p: &BasicProperties| -> Vec<String> {
            p.headers()
                .as_ref()
                .map(|h| {
                    h.inner()
                        .keys()
                        .filter(|k| k.as_str().starts_with(OUR_PREFIX))
                        .map(|k| k.to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        for k in ours_in(&props) {
            assert!(ours_in(&fitted).contains(&k), "fit dropped our own header");
        }
        if header_frame_len(&fitted) > frame_max as usize {
            let theirs = fitted.headers().as_ref().map_or(0, |h| {
                h.inner()
                    .keys()
                    .filter(|k| !k.as_str().starts_with(OUR_PREFIX))
                    .count()
            });
            assert_eq!(
                theirs, 0,
                "a copy does not fit though uploader headers are left"
            );
        }
    }
    // The body's verdict is the body's: `prepare` takes no property. It must not panic either.
    if body.len() <= MAX_BODY {
        let _ = prepare(body, MAX_BODY, demo_registry(), pseudonymizer());
    }
}

pub fn dlq_headers(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((props, body)) = split(rest) else {
        return;
    };
    let dlq = "edc.records.dlq";
    let routing_key = if flags & 1 == 1 { dlq } else { "edc.records" };
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("a time");
    let read = crate::tools::dlq::fuzz::read(&props, body, routing_key, dlq, demo_registry(), now);
    let _ = (read.kind, read.reason, read.queue);
    for (what, p) in [("put back", &read.put_back), ("replayed", &read.replayed)] {
        assert!(p.user_id().is_none(), "a {what} copy carries a user_id");
        let keys: Vec<String> = p
            .headers()
            .as_ref()
            .map(|h| h.inner().keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        assert!(
            !keys.iter().any(|k| k == "x-delivery-count"),
            "a {what} copy carries x-delivery-count"
        );
        if what == "replayed" {
            assert!(
                p.expiration().is_none(),
                "a replayed message carries an expiration"
            );
            for k in &keys {
                let ours = k.starts_with(OUR_PREFIX) && k != "x-edc-replayed-by";
                let broker = k == "x-death"
                    || k.starts_with("x-first-death-")
                    || k.starts_with("x-last-death-");
                assert!(
                    !ours && !broker,
                    "a replayed message carries a header the rules drop"
                );
            }
        }
    }
    // The preview withholds identifiers and phi items.
    if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
        let shown = read.preview.to_string();
        if let Some(Value::Object(ids)) = m.get("identifiers") {
            for v in ids.values().filter_map(Value::as_str) {
                let mut public = m.clone();
                public.remove("identifiers");
                let public = Value::Object(public).to_string();
                if distinctive(v)
                    && !public.contains(v.trim())
                    && !ids.keys().any(|k| k.contains(v.trim()))
                {
                    assert!(!shown.contains(v.trim()), "the preview shows an identifier");
                }
            }
        }
    }
}
