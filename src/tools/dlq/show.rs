//! `dlq show`: a few dead letters, each printed once it is taken and looked up: who made it and why
//! (for edc-ingest's own, from its `rejections` row), where it came from and when it expires, and a
//! de-identified preview of its body ([`preview`]), as text or as one JSON object per line. The
//! `x-edc-*` headers of a dead letter edc-ingest did not make are shown apart, as its uploader's.
//! Every value an uploader could have chosen is escaped and bounded.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::broker::publish::OUR_PREFIX;
use crate::config::Settings;
use crate::printable::printable;
use crate::protocol::Registry;
use crate::tools::{Format, emit};

use super::origin::LOOKUP_BATCH;
use super::props::Expiry;
use super::take::{Letter, Session};
use super::{Filter, connect_db, protocols};

/// The `x-edc-*` headers of a dead letter not ours shown at most (each escaped and bounded).
const UNVERIFIED_SHOWN: usize = 10;

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The `x-edc-*` headers of a dead letter edc-ingest did not make: its uploader's, shown as such.
/// Null for one of ours (its headers are ours) or one without any.
fn unverified(l: &Letter) -> Value {
    if l.origin.row().is_some() {
        return Value::Null;
    }
    let headers = l
        .message
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    let names: Vec<String> = headers
        .inner()
        .keys()
        .map(|k| k.to_string())
        .filter(|k| k.starts_with(OUR_PREFIX))
        .collect();
    if names.is_empty() {
        return Value::Null;
    }
    let mut out: Map<String, Value> = names
        .iter()
        .take(UNVERIFIED_SHOWN)
        .map(|k| {
            (
                printable(k),
                json!(printable(&l.header(k).unwrap_or_default())),
            )
        })
        .collect();
    if names.len() > UNVERIFIED_SHOWN {
        out.insert(
            "(more)".into(),
            json!(format!("{} not shown", names.len() - UNVERIFIED_SHOWN)),
        );
    }
    Value::Object(out)
}

/// One dead letter as `show` prints it: every value an uploader could have chosen is escaped.
fn shown(l: &Letter, settings: &Settings, registry: &Registry) -> Value {
    let d = &l.message.delivery;
    let p = &d.properties;
    let row = l.origin.row();
    let expires_at = match l.expiry(settings) {
        Expiry::At(t) => Some(time(t)),
        Expiry::Never | Expiry::AsTaken => None,
    };
    json!({
        "message_id": p.message_id().as_ref().map(|m| printable(m.as_str())),
        "kind": printable(&l.kind()),
        "reason": printable(&l.reason()),
        "attempts": row.map(|r| r.attempts),
        "failed_at": row.map(|r| time(r.rejected_at)),
        "consumer": row.and_then(|r| r.consumer.as_deref()).map(printable),
        "expires_at": expires_at,
        "reply_to": p.reply_to().as_ref().map(|r| printable(r.as_str())),
        "queue": printable(&l.queue(settings)),
        "body_bytes": d.data.len(),
        "unverified_headers": unverified(l),
        "preview": l.body.as_ref().map(|b| preview(b, registry)),
    })
}

/// `show`'s text for one dead letter (from [`shown`]).
fn shown_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let mut out = format!(
        "--- message_id {}\nkind: {}\nreason: {}\n",
        s("message_id").unwrap_or_else(|| "-".into()),
        s("kind").unwrap_or_default(),
        s("reason").unwrap_or_default()
    );
    if let Some(n) = v["attempts"].as_i64() {
        out.push_str(&format!("attempts: {n}\n"));
    }
    for k in ["failed_at", "consumer", "expires_at", "reply_to"] {
        if let Some(v) = s(k) {
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
    out.push_str(&format!("queue: {}\n", s("queue").unwrap_or_default()));
    if let Value::Object(headers) = &v["unverified_headers"] {
        out.push_str("x-edc-* headers edc-ingest did not write (ignored):\n");
        for (k, v) in headers {
            out.push_str(&format!("  {k}: {}\n", v.as_str().unwrap_or_default()));
        }
    }
    let preview = match &v["preview"] {
        Value::Null => "(not a JSON object; not shown, it may hold anything)".to_string(),
        p => p.to_string(),
    };
    out.push_str(&format!("body ({} bytes): {preview}", v["body_bytes"]));
    out
}

/// The first `count` matching dead letters, each printed as soon as it is taken and looked up (the
/// letters are looked up a batch at a time): who made it, where it came from and a de-identified
/// preview of the body, as text or as one JSON object per line. The whole queue (up to the limit)
/// is still read, so that the copies put back keep its order.
pub async fn show(
    settings: &Settings,
    filter: &Filter,
    count: usize,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let registry = protocols(settings)?;
    let db = connect_db(settings).await?;
    let mut session = Session::connect(settings).await?;
    let mut printed = 0;
    let mut result: anyhow::Result<()> = Ok(());
    'taking: while session.letters.len() < filter.limit {
        let want = (filter.limit - session.letters.len()).min(LOOKUP_BATCH);
        let taken = match session.take(settings, &db, want).await {
            Ok(taken) => taken,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let last = taken.len() < want;
        for letter in &session.letters[taken] {
            if printed == count || !letter.matches(filter) {
                continue;
            }
            let v = shown(letter, settings, &registry);
            let line = match format {
                Format::Json => v.to_string(),
                Format::Text => shown_text(&v),
            };
            if let Err(e) = emit(out, &line) {
                result = Err(e.into());
                break 'taking;
            }
            printed += 1;
        }
        if last {
            break;
        }
    }
    db.close().await;
    if let Err(e) = result {
        return Err(session.fail(settings, e).await);
    }
    session.close(settings).await?;
    if printed == 0 && format == Format::Text {
        emit(out, "no dead letters match")?;
    }
    Ok(())
}

/// The body with nothing identifying in it: envelope fields, identifier names (values withheld),
/// items the protocol defines as not `phi`; everything else withheld. Every text in it, keys
/// included, is escaped and bounded ([`printable`]). Null for a body that is not a JSON object.
pub fn preview(body: &Value, registry: &Registry) -> Value {
    const WITHHELD: &str = "[withheld]";
    let Value::Object(m) = body else {
        return Value::Null;
    };
    let safe_scalar = |v: &Value| match v {
        Value::String(s) => Value::String(printable(s)),
        other => other.clone(),
    };
    let mut out = Map::new();
    // The envelope: everything but the identifiers and the items, which are handled below.
    let envelope = crate::pipeline::parse::ENVELOPE_FIELDS
        .into_iter()
        .filter(|k| *k != "identifiers" && *k != "items");
    for key in envelope {
        if let Some(v) = m.get(key) {
            let safe = match v {
                Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {
                    safe_scalar(v)
                }
                Value::Object(b) if key == "batch" => {
                    json!({"id": b.get("id").map(safe_scalar), "size": b.get("size").map(safe_scalar)})
                }
                _ => json!(WITHHELD),
            };
            out.insert(key.to_string(), safe);
        }
    }
    if let Some(Value::Object(ids)) = m.get("identifiers") {
        out.insert(
            "identifiers".into(),
            Value::Object(
                ids.keys()
                    .map(|k| (printable(k), json!(WITHHELD)))
                    .collect(),
            ),
        );
    }
    let form = (|| {
        let study = m.get("study")?.as_str()?;
        let versions = registry.studies().filter(|p| p.study == study);
        let name = m.get("form")?.as_str()?;
        versions
            .into_iter()
            .find_map(|p| p.forms.get(name).map(|f| f.items.clone()))
    })();
    if let Some(Value::Object(items)) = m.get("items") {
        let shown = items
            .iter()
            .map(|(k, v)| {
                let visible = form.as_ref().and_then(|f| f.get(k)).is_some_and(|d| !d.phi)
                    && !v.is_object()
                    && !v.is_array();
                let value = if visible {
                    safe_scalar(v)
                } else {
                    json!(WITHHELD)
                };
                (printable(k), value)
            })
            .collect();
        out.insert("items".into(), Value::Object(shown));
    }
    let others = m.keys().filter(|k| !out.contains_key(*k)).count();
    if others > 0 {
        out.insert("(other fields)".into(), json!(format!("{others} withheld")));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printable::MAX_CHARS;

    fn registry() -> Registry {
        Registry::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/studies"
        )))
        .unwrap()
    }

    #[test]
    fn the_preview_never_shows_an_identifier_or_a_phi_item_or_what_the_protocol_does_not_define() {
        let body = json!({"study": "DEMO-001", "form": "AE", "subject": "DEMO-001-01-0001",
            "identifiers": {"full_name": "Ada Lovelace", "mrn": "MRN-981", "phone": 5550100},
            "items": {"AETERM": "Ada fell at home", "AESER": "Y", "AESTDAT": "2026-11-01",
                      "NOTES": "Ada's notes", "AESEV": {"nested": "Ada"}},
            "comment": "call Ada", "contact": {"email": "ada@example.org"}});
        let shown = preview(&body, &registry());
        assert_eq!(
            shown["identifiers"],
            json!({"full_name": "[withheld]", "mrn": "[withheld]", "phone": "[withheld]"})
        );
        assert_eq!(
            shown["items"],
            json!({"AETERM": "[withheld]", "AESER": "Y", "AESTDAT": "2026-11-01",
                   "NOTES": "[withheld]", "AESEV": "[withheld]"})
        );
        assert_eq!(shown["(other fields)"], json!("2 withheld"));
        assert_eq!(shown["study"], json!("DEMO-001"));
        let text = shown.to_string();
        for secret in ["Ada", "MRN-981", "5550100", "example.org"] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        // An unknown study or form: no item is known not to be phi, so none is shown.
        let unknown = json!({"study": "OTHER", "form": "VS", "items": {"SYSBP": 120}});
        assert_eq!(
            preview(&unknown, &registry())["items"],
            json!({"SYSBP": "[withheld]"})
        );
    }

    #[test]
    fn the_preview_escapes_control_characters_and_truncates_long_values() {
        let long = "S".repeat(MAX_CHARS + 80);
        let body = json!({"study": "DEMO-001", "form": "VS", "site": "SITE\u{1b}[2J\u{202e}",
            "visit": long, "batch": {"id": "b\nforged", "size": 3, "owner": "Ada"},
            "identifiers": {"x\ny": "1"},
            "items": {"SYSBP": 128, "VSDAT": "2026-11-20\u{7}", "BOGUS\u{7}": "bell"}});
        let shown = preview(&body, &registry());
        assert_eq!(shown["site"], json!(r"SITE\u{1b}[2J\u{202e}"));
        assert_eq!(
            shown["visit"],
            json!(format!("{}...", "S".repeat(MAX_CHARS)))
        );
        assert_eq!(shown["batch"], json!({"id": r"b\u{a}forged", "size": 3}));
        assert_eq!(shown["identifiers"], json!({r"x\u{a}y": "[withheld]"}));
        assert_eq!(shown["items"]["VSDAT"], json!(r"2026-11-20\u{7}"));
        assert_eq!(shown["items"][r"BOGUS\u{7}"], json!("[withheld]"));
        assert_eq!(shown["items"]["SYSBP"], json!(128));
        let text = shown.to_string();
        assert!(
            !text.chars().any(|c| c.is_control()) && !text.contains("Ada"),
            "{text:?}"
        );
    }

    #[test]
    fn the_text_shows_an_uploaders_x_edc_headers_apart_from_what_the_evidence_says() {
        let theirs = json!({"message_id": "m", "kind": "broker:delivery_limit",
            "reason": "dead-lettered by the broker", "attempts": null, "failed_at": null,
            "consumer": null, "expires_at": null, "reply_to": null, "queue": "edc.records",
            "body_bytes": 2, "unverified_headers": {"x-edc-error-kind": "conflict"},
            "preview": null});
        let text = shown_text(&theirs);
        assert!(
            text.starts_with("--- message_id m\nkind: broker:delivery_limit\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "queue: edc.records\nx-edc-* headers edc-ingest did not write (ignored):\n  \
                 x-edc-error-kind: conflict\n"
            ),
            "{text}"
        );
        assert!(
            !text.contains("attempts") && !text.contains("expires_at"),
            "{text}"
        );
        let mut ours = theirs.clone();
        ours["kind"] = json!("invalid");
        ours["attempts"] = json!(2);
        ours["expires_at"] = json!("2026-01-01T01:00:00Z");
        ours["unverified_headers"] = Value::Null;
        let text = shown_text(&ours);
        assert!(
            text.contains(
                "attempts: 2\nexpires_at: 2026-01-01T01:00:00Z\nqueue: edc.records\nbody"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_body_that_is_not_a_json_object_has_no_preview() {
        for body in [json!([1, 2]), json!("text"), json!(null), json!(7)] {
            assert_eq!(preview(&body, &registry()), Value::Null, "{body}");
        }
    }
}
