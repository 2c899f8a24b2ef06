//! What the dlq tools read of one dead letter, on properties and a body given: the fuzz target
//! `dlq_headers` and its corpus replay (`crate::fuzzing`) call it, without a broker or a database.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use serde_json::Value;

use super::origin::Origin;
use super::props::{came_from, expiry, put_back, replayed};
use crate::protocol::Registry;

/// What `dlq list`, `show`, `replay` and a copy put back make of a dead letter whose rejection
/// row was not found (the origin its headers give).
pub struct Read {
    pub kind: String,
    pub reason: String,
    pub queue: String,
    pub put_back: BasicProperties,
    pub replayed: BasicProperties,
    pub preview: Value,
}

/// See the module's text. `routing_key` is the letter's; `dead_letter_queue` the configured one.
pub fn read(
    props: &BasicProperties,
    body: &[u8],
    routing_key: &str,
    dead_letter_queue: &str,
    registry: &Registry,
    now: DateTime<Utc>,
) -> Read {
    let origin = Origin::of(None, props);
    let expires = expiry(&origin, props, Some(std::time::Duration::from_secs(3600)));
    let body = serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object);
    Read {
        kind: origin.kind(),
        reason: origin.reason(),
        queue: came_from(props, routing_key, dead_letter_queue),
        put_back: put_back(props, routing_key, dead_letter_queue, expires, now),
        replayed: replayed(props, "fuzz"),
        preview: body.map_or(Value::Null, |b| super::preview(&b, registry)),
    }
}
