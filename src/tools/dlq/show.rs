//! `dlq show`: a few dead letters, each printed as it is taken: its headers and a de-identified
//! preview of its body ([`preview`]), as text or as one JSON object per line. Every value an
//! uploader could have chosen is escaped and bounded.

use std::io::Write;

use serde_json::{Map, Value, json};

use crate::broker::publish::{H_ATTEMPTS, H_CONSUMER, H_EXPIRES_AT, H_FAILED_AT};
use crate::config::Settings;
use crate::printable::printable;
use crate::protocol::Registry;
use crate::tools::{Format, emit};

use super::take::{Letter, Session};
use super::{Filter, protocols};

/// One dead letter as `show` prints it: every value an uploader could have chosen is escaped.
fn shown(l: &Letter, registry: &Registry) -> Value {
    let d = &l.message.delivery;
    let p = &d.properties;
    let text = |v: Option<String>| v.map(|v| printable(&v));
    json!({
        "message_id": p.message_id().as_ref().map(|m| printable(m.as_str())),
        "kind": printable(&l.kind),
        "reason": printable(&l.reason),
        "attempts": l.header(H_ATTEMPTS).and_then(|a| a.parse::<i64>().ok()),
        "failed_at": text(l.header(H_FAILED_AT)),
        "consumer": text(l.header(H_CONSUMER)),
        "expires_at": text(l.header(H_EXPIRES_AT)),
        "reply_to": p.reply_to().as_ref().map(|r| printable(r.as_str())),
        "queue": printable(&l.queue()),
        "body_bytes": d.data.len(),
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
        out.push_str(&format!("{H_ATTEMPTS}: {n}\n"));
    }
    for (h, k) in [
        (H_FAILED_AT, "failed_at"),
        (H_CONSUMER, "consumer"),
        (H_EXPIRES_AT, "expires_at"),
    ] {
        if let Some(v) = s(k) {
            out.push_str(&format!("{h}: {v}\n"));
        }
    }
    if let Some(r) = s("reply_to") {
        out.push_str(&format!("reply_to: {r}\n"));
    }
    out.push_str(&format!("queue: {}\n", s("queue").unwrap_or_default()));
    let preview = match &v["preview"] {
        Value::Null => "(not a JSON object; not shown, it may hold anything)".to_string(),
        p => p.to_string(),
    };
    out.push_str(&format!("body ({} bytes): {preview}", v["body_bytes"]));
    out
}

/// The first `count` matching dead letters, each printed as soon as it is taken: headers and a
/// de-identified preview of the body, as text or as one JSON object per line. The whole queue (up
/// to the limit) is still read, so that the copies put back keep its order.
pub async fn show(
    settings: &Settings,
    filter: &Filter,
    count: usize,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let registry = protocols(settings)?;
    let mut session = Session::connect(settings).await?;
    let mut printed = 0;
    let mut result: anyhow::Result<()> = Ok(());
    while session.letters.len() < filter.limit {
        let letter = match session.take(settings).await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if printed == count || !letter.matches(filter) {
            continue;
        }
        let v = shown(letter, &registry);
        let line = match format {
            Format::Json => v.to_string(),
            Format::Text => shown_text(&v),
        };
        if let Err(e) = emit(out, &line) {
            result = Err(e.into());
            break;
        }
        printed += 1;
    }
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
    fn a_body_that_is_not_a_json_object_has_no_preview() {
        for body in [json!([1, 2]), json!("text"), json!(null), json!(7)] {
            assert_eq!(preview(&body, &registry()), Value::Null, "{body}");
        }
    }
}
