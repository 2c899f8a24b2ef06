//! The edc.crf.v1 body: parse, validate (with the CEL checks and alerts), de-identify.

use serde_json::{Map, Value, json};

use super::{MAX_BODY, demo_registry, distinctive, pseudonymizer};
use crate::pipeline::validate::{RecordContext, validate_items};
use crate::pipeline::{Deidentified, Rejected, parse, prepare};

/// The strings under `identifiers` and `items` (values, not keys), anywhere in them.
fn values(body: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::Object(m) => m.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for field in ["identifiers", "items"] {
        if let Some(v) = body.get(field) {
            walk(v, &mut out);
        }
    }
    out
}

/// Everything of the body but those values: keys and the envelope's fields.
fn public_text(body: &Value) -> String {
    let mut shown = body.clone();
    fn blank(v: &mut Value) {
        match v {
            Value::String(s) => s.clear(),
            Value::Array(a) => a.iter_mut().for_each(blank),
            Value::Object(m) => m.values_mut().for_each(blank),
            _ => {}
        }
    }
    if let Value::Object(m) = &mut shown {
        for field in ["identifiers", "items"] {
            if let Some(v) = m.get_mut(field) {
                blank(v);
            }
        }
    }
    shown.to_string()
}

/// A reason quotes no value of the body.
fn check_reason(body: Option<&Value>, rejected: &Rejected) {
    let Some(body) = body else { return };
    let public = public_text(body);
    for v in values(body) {
        if distinctive(&v) && !public.contains(v.trim()) {
            assert!(
                !rejected.reason.contains(v.trim()),
                "a reason quotes a value of the body: {:?}",
                rejected.reason
            );
        }
    }
}

/// What a verdict comes to, comparable.
fn outcome(r: &Result<Deidentified, Rejected>) -> String {
    match r {
        Ok(d) => format!(
            "ok {} {} {} {:?} {:?} {:?}",
            d.record_id,
            d.items,
            d.pseudonyms,
            d.findings,
            d.alerts,
            d.status.as_str()
        ),
        Err(r) => format!("{:?}", r),
    }
}

pub fn crf_body(data: &[u8]) {
    let registry = demo_registry();
    let verdict = prepare(data, MAX_BODY, registry, pseudonymizer());
    let tree: Option<Value> = serde_json::from_slice(data).ok();
    if let Err(r) = &verdict {
        check_reason(tree.as_ref(), r);
        let (hinted_id, _) = parse::hint(data, MAX_BODY);
        if let Some(id) = r.record_id {
            assert_eq!(Some(id), hinted_id, "the refusal names another record");
        }
    }
    // JSON parsed, written and parsed again gives the same verdict (serde_json keeps the last of
    // duplicate keys both times, and writes numbers as it read them).
    if let Some(tree) = tree {
        let again = serde_json::to_vec(&tree).expect("a JSON tree serialises");
        if again.len() <= MAX_BODY {
            let second = prepare(&again, MAX_BODY, registry, pseudonymizer());
            assert_eq!(outcome(&verdict), outcome(&second), "JSON round trip");
        }
    }
}

/// A record of one of the demo forms, whose items are the input (a JSON object, else nothing).
pub fn validate_cel(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let forms: [(&str, &str, &str); 7] = [
        ("DEMO-001", "SCREENING", "VS"),
        ("DEMO-001", "BASELINE", "AE"),
        ("DEMO-001", "WEEK4", "LB"),
        ("DEMO-002", "SE.SCREENING", "F.AE"),
        ("DEMO-002", "SE.BASELINE", "F.CM"),
        ("DEMO-002", "SE.WEEK4", "F.EX"),
        ("DEMO-002", "SE.WEEK4", "F.XX"),
    ];
    let (study, visit, form) = forms[usize::from(which) % forms.len()];
    let Ok(Value::Object(items)) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let registry = demo_registry();
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 20).expect("a date");
    let protocol = registry.protocol_for(study, day).expect("a demo protocol");
    let context = RecordContext {
        study,
        site: "SITE-01",
        visit,
        form,
    };
    let first = validate_items(protocol, context, items.clone());
    let second = validate_items(protocol, context, items.clone());
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.items, b.items, "validation is not deterministic");
            assert_eq!(a.findings, b.findings, "validation is not deterministic");
            // Accepted items are canonical: validated again, they stay as they are.
            let again = validate_items(protocol, context, a.items.clone())
                .expect("accepted items are accepted again");
            assert_eq!(again.items, a.items, "accepted items are not canonical");
            assert_eq!(
                again.findings, a.findings,
                "findings changed on canonical items"
            );
            assert_eq!(again.alerts, a.alerts, "alerts changed on canonical items");
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "validation is not deterministic");
            check_reason(Some(&json!({"items": Value::Object(items.clone())})), a);
        }
        _ => panic!("validation is not deterministic"),
    }
    // The same through the whole pipeline: the body of the record, de-identified.
    let body = json!({"schema": "edc.crf.v1", "record_id": "8a0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d",
        "version": 1, "study": study, "site": "SITE-01", "subject": "S-1", "visit": visit,
        "form": form, "captured_at": "2026-11-20T10:15:00Z", "entered_by": "crc-1",
        "items": Value::Object(items)});
    let bytes = serde_json::to_vec(&body).expect("a JSON tree serialises");
    if let Ok(d) = prepare(&bytes, MAX_BODY, registry, pseudonymizer()) {
        no_leak(&body, &d);
    }
}

/// Nothing planted as an identifier or a `phi` item appears in what de-identification outputs.
fn no_leak(body: &Value, d: &Deidentified) {
    let registry = demo_registry();
    let form = body["form"].as_str().unwrap_or_default();
    let mut planted: Vec<String> = Vec::new();
    if let Some(Value::Object(ids)) = body.get("identifiers") {
        for (k, v) in ids {
            if k != "birth_date" {
                planted.extend(v.as_str().map(str::to_string));
            }
        }
    }
    let phi: Vec<&str> = registry
        .studies()
        .filter_map(|p| p.forms.get(form))
        .flat_map(|f| {
            let top = f
                .items
                .iter()
                .filter(|(_, d)| d.phi)
                .map(|(k, _)| k.as_str());
            let rows = f.groups.values().flat_map(|g| {
                g.items
                    .iter()
                    .filter(|(_, d)| d.phi)
                    .map(|(k, _)| k.as_str())
            });
            top.chain(rows).collect::<Vec<_>>()
        })
        .collect();
    let mut stack: Vec<&Value> = body.get("items").into_iter().collect();
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) if phi.contains(&k.as_str()) => planted.push(s.clone()),
                        _ => stack.push(v),
                    }
                }
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    // What may show: the body without its identifiers and with its phi values blanked.
    let mut public = body.clone();
    if let Value::Object(m) = &mut public {
        m.remove("identifiers");
    }
    let mut stack: Vec<&mut Value> = public.get_mut("items").into_iter().collect();
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    match v {
                        Value::String(s) if phi.contains(&k.as_str()) => s.clear(),
                        _ => stack.push(v),
                    }
                }
            }
            Value::Array(a) => stack.extend(a.iter_mut()),
            _ => {}
        }
    }
    let public = public.to_string();
    let out = json!({
        "items": d.items, "pseudonyms": d.pseudonyms, "birth_year": d.birth_year,
        "findings": d.findings.iter().map(|f| format!("{} {}", f.check, f.message)).collect::<Vec<_>>(),
        "alerts": d.alerts, "subject": d.subject, "entered_by": d.entered_by,
    })
    .to_string();
    for v in planted {
        let v = v.trim();
        let escaped = serde_json::to_string(v).expect("a string serialises");
        let inner = &escaped[1..escaped.len() - 1];
        if distinctive(v) && !public.contains(inner) {
            assert!(
                !out.contains(inner),
                "a planted identifier or phi value survived de-identification"
            );
        }
    }
}

/// Arbitrary Unicode identifiers and `phi` items planted in an accepted record: lines of the input
/// (the 6 identifier fields but birth_date, an AE term, a lab comment, a DEMO-002 AE log term).
pub fn deidentify(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n').map(str::to_string);
    let mut next = || lines.next().unwrap_or_default();
    let fields = [
        "full_name",
        "phone",
        "national_id",
        "mrn",
        "address",
        "email",
    ];
    let mut ids = Map::new();
    for f in fields {
        ids.insert(f.to_string(), Value::String(next()));
    }
    ids.insert("birth_date".into(), json!("1961-03-02"));
    let (ae, lb, log) = (next(), next(), next());
    let records = [
        (
            "DEMO-001",
            "BASELINE",
            "AE",
            json!({"AETERM": ae, "AESER": "N", "AESTDAT": "2026-11-01"}),
        ),
        (
            "DEMO-001",
            "WEEK4",
            "LB",
            json!({"HGB": 13.5, "LBDAT": "2026-11-20", "LBCOM": lb}),
        ),
        (
            "DEMO-002",
            "SE.SCREENING",
            "F.AE",
            json!({"I.AEYN": true, "IG.AELOG": [
            {"I.AETERM": log, "I.AESTDAT": "2026-11", "I.AESER": false}]}),
        ),
    ];
    for (study, visit, form, items) in records {
        let body = json!({"schema": "edc.crf.v1", "record_id": "8a0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d",
            "version": 1, "study": study, "site": "SITE-01", "subject": "S-1", "visit": visit,
            "form": form, "captured_at": "2026-11-20T10:15:00Z", "entered_by": "crc-1",
            "identifiers": Value::Object(ids.clone()), "items": items});
        let bytes = serde_json::to_vec(&body).expect("a JSON tree serialises");
        match prepare(&bytes, MAX_BODY, demo_registry(), pseudonymizer()) {
            Ok(d) => no_leak(&body, &d),
            Err(r) => check_reason(Some(&body), &r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted() -> (Value, Deidentified) {
        let body = json!({"schema": "edc.crf.v1", "record_id": "8a0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d",
            "version": 1, "study": "DEMO-001", "site": "SITE-01", "subject": "S-1", "visit": "BASELINE",
            "form": "AE", "captured_at": "2026-11-20T10:15:00Z", "entered_by": "crc-1",
            "identifiers": {"full_name": "Zoë Ægir"},
            "items": {"AETERM": "migraine ☂", "AESER": "N", "AESTDAT": "2026-11-01"}});
        let bytes = serde_json::to_vec(&body).unwrap();
        let d = prepare(&bytes, MAX_BODY, demo_registry(), pseudonymizer()).unwrap();
        (body, d)
    }

    #[test]
    fn the_leak_oracle_passes_a_de_identified_record() {
        let (body, d) = accepted();
        no_leak(&body, &d);
    }

    #[test]
    #[should_panic(expected = "survived de-identification")]
    fn the_leak_oracle_catches_an_identifier_left_in_an_item() {
        let (body, mut d) = accepted();
        d.items["AESER"] = json!("Zoë Ægir");
        no_leak(&body, &d);
    }

    #[test]
    #[should_panic(expected = "survived de-identification")]
    fn the_leak_oracle_catches_a_phi_item_left_in_a_finding() {
        let (body, mut d) = accepted();
        d.findings.push(crate::pipeline::Finding {
            check: "X".into(),
            message: "saw migraine ☂".into(),
            row: None,
        });
        no_leak(&body, &d);
    }
}
