//! Stage 1: bytes to a typed [`Envelope`].
//!
//! The size is checked before anything is parsed; the body is parsed once into a JSON tree and the
//! envelope fields are taken out of it by value (no copies of the items). Everything the contract
//! requires is checked here; whether the study, site, form and items exist is `validate`'s business.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{RejectKind, Rejected};

pub const SCHEMA: &str = "edc.crf.v1";

/// The identifier fields an uploader may send, in the order they are documented.
pub const IDENTIFIER_FIELDS: [&str; 7] = [
    "full_name",
    "birth_date",
    "phone",
    "national_id",
    "mrn",
    "address",
    "email",
];

/// Every top-level field of the contract.
pub const ENVELOPE_FIELDS: [&str; 13] = [
    "schema",
    "record_id",
    "version",
    "study",
    "site",
    "subject",
    "visit",
    "form",
    "captured_at",
    "entered_by",
    "batch",
    "identifiers",
    "items",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub id: Uuid,
    pub size: Option<u32>,
}

/// Direct patient identifiers as received. `Debug` shows only which fields are present.
#[derive(Clone, Default)]
pub struct Identifiers {
    /// (field, value), field one of [`IDENTIFIER_FIELDS`].
    pub fields: Vec<(&'static str, String)>,
    pub birth_date: Option<NaiveDate>,
}

impl fmt::Debug for Identifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.fields.iter().map(|(k, _)| *k).collect();
        write!(f, "Identifiers({names:?}, values redacted)")
    }
}

/// A message that has the contract's shape. Not `Debug`: its items may hold protected values.
pub struct Envelope {
    pub record_id: Uuid,
    pub version: i32,
    pub study: String,
    pub site: String,
    pub subject: String,
    pub visit: String,
    pub form: String,
    pub captured_at: DateTime<FixedOffset>,
    pub entered_by: String,
    pub batch: Option<Batch>,
    pub identifiers: Identifiers,
    pub items: Map<String, Value>,
}

fn invalid(reason: impl Into<String>) -> Rejected {
    Rejected::new(RejectKind::Invalid, reason)
}

/// Parses one message body.
pub fn parse(body: &[u8], max_message_bytes: usize) -> Result<Envelope, Rejected> {
    if body.len() > max_message_bytes {
        return Err(Rejected::new(
            RejectKind::TooLarge,
            format!(
                "body of {} bytes exceeds max_message_bytes ({max_message_bytes})",
                body.len()
            ),
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json's messages name a line and column, never the offending text.
        Rejected::new(
            RejectKind::Malformed,
            format!("body is not UTF-8 JSON: {}", classify_json_error(&e)),
        )
    })?;
    let Value::Object(mut map) = value else {
        return Err(Rejected::new(
            RejectKind::Malformed,
            "body is JSON but not an object",
        ));
    };

    // What can be learnt without trusting the rest: used to label a rejection.
    let (record_id, batch) = hint_of(&map);
    let label = |mut r: Rejected| {
        r.record_id = record_id;
        r.batch_id = batch.as_ref().map(|b| b.id);
        r.batch_size = batch.as_ref().and_then(|b| b.size);
        r
    };
    envelope(&mut map).map_err(label)
}

fn classify_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "syntax error",
        Category::Eof => "unexpected end of input",
        Category::Data => "invalid data",
        Category::Io => "read error",
    };
    // Line and column only; the Display of some serde_json errors can quote input.
    format!("{what} at line {} column {}", e.line(), e.column())
}

fn envelope(map: &mut Map<String, Value>) -> Result<Envelope, Rejected> {
    let unknown = map
        .keys()
        .filter(|k| !ENVELOPE_FIELDS.contains(&k.as_str()))
        .count();
    if unknown > 0 {
        return Err(invalid(format!(
            "{unknown} top-level field(s) outside the {SCHEMA} contract"
        )));
    }
    if contains_nul(map) {
        return Err(invalid(
            "a text contains a NUL character (\\u0000), which the database cannot store",
        ));
    }
    match map.get("schema") {
        Some(Value::String(s)) if s == SCHEMA => {}
        Some(Value::String(_)) => return Err(invalid(format!("schema is not {SCHEMA}"))),
        Some(_) => return Err(invalid("field `schema` must be a string")),
        None => return Err(invalid("field `schema` is missing")),
    }
    let record_id = Uuid::parse_str(&take_string(map, "record_id")?)
        .map_err(|_| invalid("field `record_id` is not a UUID"))?;
    let version = match map.remove("version") {
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|v| (1..=i64::from(i32::MAX)).contains(v))
            .ok_or_else(|| invalid("field `version` must be an integer from 1"))?
            as i32,
        Some(_) => return Err(invalid("field `version` must be an integer from 1")),
        None => return Err(invalid("field `version` is missing")),
    };
    let study = take_string(map, "study")?;
    let site = take_string(map, "site")?;
    let subject = take_string(map, "subject")?;
    let visit = take_string(map, "visit")?;
    let form = take_string(map, "form")?;
    let captured_at = DateTime::parse_from_rfc3339(&take_string(map, "captured_at")?)
        .map_err(|_| invalid("field `captured_at` is not an RFC 3339 timestamp"))?;
    let entered_by = take_string(map, "entered_by")?;
    let batch = match map.remove("batch") {
        None | Some(Value::Null) => None,
        Some(Value::Object(b)) => Some(batch(b)?),
        Some(_) => return Err(invalid("field `batch` must be an object")),
    };
    let identifiers = match map.remove("identifiers") {
        None | Some(Value::Null) => Identifiers::default(),
        Some(Value::Object(ids)) => identifiers(ids)?,
        Some(_) => return Err(invalid("field `identifiers` must be an object")),
    };
    let items = match map.remove("items") {
        Some(Value::Object(items)) => items,
        Some(_) => return Err(invalid("field `items` must be an object")),
        None => return Err(invalid("field `items` is missing")),
    };
    Ok(Envelope {
        record_id,
        version,
        study,
        site,
        subject,
        visit,
        form,
        captured_at,
        entered_by,
        batch,
        identifiers,
        items,
    })
}

fn take_string(map: &mut Map<String, Value>, field: &str) -> Result<String, Rejected> {
    match map.remove(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(invalid(format!("field `{field}` is empty"))),
        Some(_) => Err(invalid(format!("field `{field}` must be a string"))),
        None => Err(invalid(format!("field `{field}` is missing"))),
    }
}

const MAX_BATCH_SIZE: u64 = i32::MAX as u64;
const BATCH_SIZE_RULE: &str = "field `batch.size` must be an integer from 1 to 2147483647";

fn batch(mut b: Map<String, Value>) -> Result<Batch, Rejected> {
    if b.keys().any(|k| k != "id" && k != "size") {
        return Err(invalid("field `batch` may hold only `id` and `size`"));
    }
    let id = match b.remove("id") {
        Some(Value::String(s)) => {
            Uuid::parse_str(&s).map_err(|_| invalid("field `batch.id` is not a UUID"))?
        }
        _ => return Err(invalid("field `batch.id` must be a UUID string")),
    };
    let size = match b.remove("size") {
        None | Some(Value::Null) => None,
        // At most i32::MAX: the receipt counts in PostgreSQL integers.
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .filter(|s| (1..=MAX_BATCH_SIZE).contains(s))
                .ok_or_else(|| invalid(BATCH_SIZE_RULE))? as u32,
        ),
        Some(_) => return Err(invalid(BATCH_SIZE_RULE)),
    };
    Ok(Batch { id, size })
}

fn identifiers(ids: Map<String, Value>) -> Result<Identifiers, Rejected> {
    let mut out = Identifiers::default();
    for (key, value) in ids {
        let Some(field) = IDENTIFIER_FIELDS.iter().copied().find(|f| *f == key) else {
            return Err(invalid(format!(
                "field `identifiers` holds a key outside the allowed set ({})",
                IDENTIFIER_FIELDS.join(", ")
            )));
        };
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            _ => return Err(invalid(format!("identifier `{field}` must be a string"))),
        };
        if field == "birth_date" {
            out.birth_date = Some(
                NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                    .map_err(|_| invalid("identifier `birth_date` is not a YYYY-MM-DD date"))?,
            );
        }
        out.fields.push((field, text));
    }
    Ok(out)
}

/// What can be learnt of a body without trusting it: its record id and upload batch, if it is a
/// JSON object of at most `max_message_bytes` that says them in the contract's form. For the
/// refusals that come before or instead of the pipeline (a job that panicked, a message that crashed
/// the process), so that their batch's receipt still counts them.
pub fn hint(body: &[u8], max_message_bytes: usize) -> (Option<Uuid>, Option<Batch>) {
    if body.len() > max_message_bytes {
        return (None, None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => hint_of(&map),
        _ => (None, None),
    }
}

/// The record id and batch a body's fields say, each taken only if well-formed: a batch with a
/// valid id and a size out of range keeps its id.
fn hint_of(map: &Map<String, Value>) -> (Option<Uuid>, Option<Batch>) {
    let uuid = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
    };
    let record_id = uuid(map.get("record_id"));
    let batch = map.get("batch").and_then(|b| {
        Some(Batch {
            id: uuid(b.get("id"))?,
            size: b
                .get("size")
                .and_then(Value::as_u64)
                .filter(|n| (1..=MAX_BATCH_SIZE).contains(n))
                .map(|n| n as u32),
        })
    });
    (record_id, batch)
}

/// True if any string or key anywhere in the tree holds U+0000 (PostgreSQL text and jsonb refuse it).
fn contains_nul(map: &Map<String, Value>) -> bool {
    fn value(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(value),
            Value::Object(m) => contains_nul(m),
            _ => false,
        }
    }
    map.iter().any(|(k, v)| k.contains('\0') || value(v))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn sample() -> Value {
        json!({"schema": "edc.crf.v1", "record_id": "8a0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d", "version": 1,
            "study": "DEMO-001", "site": "SITE-03", "subject": "DEMO-001-03-0042", "visit": "WEEK4",
            "form": "VS", "captured_at": "2026-11-20T10:15:00Z", "entered_by": "crc-17",
            "batch": {"id": "b1f2c3d4-0000-4000-8000-000000000001", "size": 1000},
            "identifiers": {"full_name": "Ada Lovelace", "birth_date": "1961-03-02", "phone": "+44 20 7946 0000",
                "national_id": "QQ 12 34 56 C", "mrn": "MRN-778899", "address": "12 Example Road, London",
                "email": "ada@example.org"},
            "items": {"SYSBP": 128, "DIABP": 82, "PULSE": 71, "TEMP": 36.8, "VSDAT": "2026-11-20"}})
    }

    fn parse_value(v: &Value) -> Result<Envelope, Rejected> {
        parse(&serde_json::to_vec(v).unwrap(), 1 << 20)
    }

    #[test]
    fn parses_the_documented_example() {
        let e = parse_value(&sample()).unwrap();
        assert_eq!(e.version, 1);
        assert_eq!(e.form, "VS");
        assert_eq!(e.identifiers.fields.len(), 7);
        assert_eq!(e.batch.unwrap().size, Some(1000));
        assert_eq!(e.items.len(), 5);
    }

    #[test]
    fn size_is_checked_before_parsing() {
        let r = parse(b"not even json", 4).err().unwrap();
        assert_eq!(r.kind, RejectKind::TooLarge);
    }

    #[test]
    fn malformed_bodies() {
        for body in [&b"\xff\xfe"[..], b"[1,2]", b"{\"a\":", b"42", b""] {
            let r = parse(body, 100).err().unwrap();
            assert_eq!(r.kind, RejectKind::Malformed, "{body:?}");
        }
    }

    #[test]
    fn envelope_errors_are_invalid_and_keep_the_record_id() {
        let mut v = sample();
        v["version"] = json!(0);
        let r = parse_value(&v).err().unwrap();
        assert_eq!(r.kind, RejectKind::Invalid);
        assert!(r.record_id.is_some() && r.batch_id.is_some());
        for field in ["record_id", "study", "captured_at", "items", "entered_by"] {
            let mut v = sample();
            v.as_object_mut().unwrap().remove(field);
            let r = parse_value(&v).err().unwrap();
            assert_eq!(r.kind, RejectKind::Invalid, "{field}");
            assert!(r.reason.contains(field), "{}", r.reason);
        }
    }

    #[test]
    fn unknown_identifier_keys_are_refused_without_quoting_them() {
        let mut v = sample();
        v["identifiers"]["mothers_maiden_name"] = json!("Byron");
        let r = parse_value(&v).err().unwrap();
        assert_eq!(r.kind, RejectKind::Invalid);
        assert!(!r.reason.contains("mothers") && !r.reason.contains("Byron"));
    }

    #[test]
    fn a_batch_size_past_the_largest_postgresql_integer_is_invalid() {
        let mut v = sample();
        v["batch"]["size"] = json!(2_147_483_648u64);
        let r = parse_value(&v).err().unwrap();
        assert_eq!(r.kind, RejectKind::Invalid);
        assert!(r.reason.contains("batch.size"), "{}", r.reason);
        assert!(r.batch_id.is_some() && r.batch_size.is_none(), "{r:?}");
        v["batch"]["size"] = json!(2_147_483_647u64);
        assert_eq!(
            parse_value(&v).unwrap().batch.unwrap().size,
            Some(i32::MAX as u32)
        );
    }

    #[test]
    fn a_hint_reads_the_record_and_batch_of_a_body_it_does_not_trust() {
        let body = serde_json::to_vec(&sample()).unwrap();
        let (record_id, batch) = hint(&body, 1 << 20);
        assert_eq!(
            record_id.unwrap().to_string(),
            "8a0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d"
        );
        assert_eq!(batch.unwrap().size, Some(1000));
        assert_eq!(hint(&body, 10), (None, None), "too large: not parsed");
        assert_eq!(hint(b"\xff not json", 100), (None, None));
        let mut v = sample();
        v["batch"]["size"] = json!(3_000_000_000u64);
        let (_, batch) = hint(&serde_json::to_vec(&v).unwrap(), 1 << 20);
        assert_eq!(
            batch.unwrap().size,
            None,
            "a size out of range is not taken"
        );
    }

    #[test]
    fn nul_characters_are_invalid() {
        let mut v = sample();
        v["subject"] = json!("DEMO\u{0}1");
        assert_eq!(parse_value(&v).err().unwrap().kind, RejectKind::Invalid);
    }

    #[test]
    fn identifiers_never_show_in_debug() {
        let e = parse_value(&sample()).unwrap();
        let shown = format!("{:?}", e.identifiers);
        assert!(!shown.contains("Ada") && !shown.contains("1961"), "{shown}");
    }
}
