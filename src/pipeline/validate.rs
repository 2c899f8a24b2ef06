//! Stage 2: an [`Envelope`] checked against the study protocol in force when it was captured.
//!
//! Two kinds of problem, kept apart on purpose:
//! - **structural** (unknown study, site, visit, form or item; a value not of its item's type): the
//!   record cannot be interpreted, so it is refused as `invalid`;
//! - **soft** (a required item missing, out of range, a code outside its list, a text too long, an edit
//!   check false): the record is stored as `queried` with one [`Finding`] each, as an EDC raises a
//!   query to the site instead of throwing data away.

use std::sync::{Arc, OnceLock};

use chrono::NaiveDate;
use serde_json::Value;

use super::parse::Envelope;
use super::{RejectKind, Rejected};
use crate::protocol::{Form, Item, ItemType, Protocol, Registry};

/// One failed soft check: the check id (or the item name) and a message for the site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub check: String,
    pub message: String,
}

/// A record that passed the structural checks, with its soft findings.
pub struct Validated {
    pub envelope: Envelope,
    pub protocol: Arc<Protocol>,
    pub findings: Vec<Finding>,
    /// Ids of the protocol's alerts this record raises.
    pub alerts: Vec<String>,
}

fn invalid(reason: impl Into<String>) -> Rejected {
    Rejected::new(RejectKind::Invalid, reason)
}

pub fn validate(envelope: Envelope, registry: &Registry) -> Result<Validated, Rejected> {
    if !registry.knows_study(&envelope.study) {
        return Err(invalid("unknown study"));
    }
    let day = envelope.captured_at.date_naive();
    let protocol = registry
        .protocol_for(&envelope.study, day)
        .ok_or_else(|| {
            invalid(format!(
                "no protocol version of study {} is in force on the capture date",
                envelope.study
            ))
        })?
        .clone();
    let study = &protocol.study;
    if !protocol.sites.contains(&envelope.site) {
        return Err(invalid(format!("site is not one of study {study}'s sites")));
    }
    if !protocol.visits.contains(&envelope.visit) {
        return Err(invalid(format!(
            "visit is not one of study {study}'s visits"
        )));
    }
    let Some(form) = protocol.forms.get(&envelope.form) else {
        return Err(invalid(format!("form is not one of study {study}'s forms")));
    };
    let form_name = &envelope.form;

    let mut findings = Vec::new();
    let undefined = envelope
        .items
        .keys()
        .filter(|k| !form.items.contains_key(k.as_str()))
        .count();
    if undefined > 0 {
        return Err(invalid(format!(
            "{undefined} item(s) not defined by form {form_name} of study {study}"
        )));
    }
    for (name, def) in &form.items {
        match envelope.items.get(name) {
            None | Some(Value::Null) => {
                if def.required {
                    findings.push(Finding {
                        check: name.clone(),
                        message: format!("{name} is required but missing"),
                    });
                }
            }
            Some(value) => check_item(name, def, value, &mut findings)?,
        }
    }
    let alerts = run_checks(&protocol, form, &envelope, &mut findings);
    Ok(Validated {
        envelope,
        protocol,
        findings,
        alerts,
    })
}

/// Type errors are structural (refuse); range, code and length are soft (a finding).
fn check_item(
    name: &str,
    def: &Item,
    value: &Value,
    findings: &mut Vec<Finding>,
) -> Result<(), Rejected> {
    let mut soft = |message: String| {
        findings.push(Finding {
            check: name.to_string(),
            message,
        })
    };
    let unit = def
        .unit
        .as_deref()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    let number = match (def.kind, value) {
        (ItemType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => n.as_f64(),
        (ItemType::Integer, _) => {
            return Err(invalid(format!("item {name} must be an integer")));
        }
        (ItemType::Decimal, Value::Number(n)) => n.as_f64(),
        (ItemType::Decimal, _) => return Err(invalid(format!("item {name} must be a number"))),
        (ItemType::Text, Value::String(s)) => {
            if let Some(max) = def.max_length
                && s.chars().count() > max
            {
                soft(format!("{name} is longer than {max} characters"));
            }
            None
        }
        (ItemType::Text, _) => return Err(invalid(format!("item {name} must be a text"))),
        (ItemType::Date, Value::String(s)) => {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| invalid(format!("item {name} is not a YYYY-MM-DD date")))?;
            None
        }
        (ItemType::Date, _) => {
            return Err(invalid(format!("item {name} must be a YYYY-MM-DD date")));
        }
        (ItemType::Code, Value::String(s)) => {
            if let Some(codes) = &def.codes
                && !codes.iter().any(|c| c == s)
            {
                soft(format!(
                    "{name} is not one of the codes {}",
                    codes.join(", ")
                ));
            }
            None
        }
        (ItemType::Code, _) => return Err(invalid(format!("item {name} must be a code (text)"))),
    };
    if let (Some(x), Some([lo, hi])) = (number, def.range)
        && !(lo..=hi).contains(&x)
    {
        let side = if x < lo { "below" } else { "above" };
        soft(format!(
            "{name} is {side} the expected range [{lo}, {hi}]{unit}"
        ));
    }
    Ok(())
}

fn cel_env() -> Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

fn cel_value(def: &Item, v: &Value) -> cel::Value {
    match (def.kind, v) {
        (ItemType::Integer, Value::Number(n)) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        (_, Value::Number(n)) => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        (_, Value::String(s)) => cel::Value::String(Arc::new(s.clone())),
        (_, Value::Bool(b)) => cel::Value::Bool(*b),
        _ => cel::Value::Null,
    }
}

/// Runs the form's edit checks and the protocol's alerts; returns the alerts raised. A check reading
/// an absent item is skipped; one that cannot be evaluated (a protocol error, such as comparing a date
/// with a number) raises a finding rather than passing silently. An alert is raised only when its
/// expression is true: one that reads an item the record lacks is simply not raised (`SYSBP >= 180 ||
/// DIABP >= 120` still fires on a high SYSBP alone).
fn run_checks(
    protocol: &Protocol,
    form: &Form,
    envelope: &Envelope,
    findings: &mut Vec<Finding>,
) -> Vec<String> {
    if form.checks.is_empty() && protocol.alerts.is_empty() {
        return Vec::new();
    }
    let present = |name: &String| !matches!(envelope.items.get(name), None | Some(Value::Null));
    let mut ctx = cel::Context::with_env(cel_env());
    for (name, value) in &envelope.items {
        if let Some(def) = form.items.get(name) {
            ctx.add_variable_from_value(name.clone(), cel_value(def, value));
        }
    }
    for (var, value) in [
        ("study", &envelope.study),
        ("site", &envelope.site),
        ("visit", &envelope.visit),
        ("form", &envelope.form),
    ] {
        ctx.add_variable_from_value(var, cel::Value::String(Arc::new(value.clone())));
    }
    for check in &form.checks {
        if !check.items.iter().all(present) {
            continue;
        }
        match check.program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => findings.push(Finding {
                check: check.id.clone(),
                message: check.message.clone(),
            }),
            Ok(_) | Err(_) => findings.push(Finding {
                check: check.id.clone(),
                message: format!(
                    "check could not be evaluated (expression `{}`); please review: {}",
                    check.source, check.message
                ),
            }),
        }
    }
    protocol
        .alerts
        .iter()
        .filter(|alert| matches!(alert.program.execute(&ctx), Ok(cel::Value::Bool(true))))
        .map(|alert| alert.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse, tests::sample};
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn registry() -> Registry {
        Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/studies")).unwrap()
    }

    fn run(v: &Value) -> Result<Validated, Rejected> {
        let e = parse(&serde_json::to_vec(v).unwrap(), 1 << 20).unwrap();
        validate(e, &registry())
    }

    fn checks(v: &Value) -> Vec<String> {
        run(v)
            .ok()
            .unwrap()
            .findings
            .into_iter()
            .map(|f| f.check)
            .collect()
    }

    #[test]
    fn the_documented_example_is_accepted_by_protocol_2_1() {
        let v = run(&sample()).ok().unwrap();
        assert!(v.findings.is_empty(), "{:?}", v.findings);
        assert_eq!(v.protocol.version, "2.1");
    }

    #[test]
    fn soft_problems_become_findings() {
        let mut v = sample();
        v["items"]["SYSBP"] = json!(300);
        v["items"].as_object_mut().unwrap().remove("VSDAT");
        assert_eq!(checks(&v), vec!["SYSBP", "VSDAT"]);

        let mut v = sample();
        v["items"]["DIABP"] = json!(140);
        v["items"]["SYSBP"] = json!(120);
        assert_eq!(checks(&v), vec!["VS001"]);
    }

    #[test]
    fn a_check_with_an_absent_item_is_skipped() {
        let mut v = sample();
        v["items"].as_object_mut().unwrap().remove("DIABP");
        assert_eq!(checks(&v), vec!["DIABP"]);
    }

    #[test]
    fn codes_and_lengths_are_soft() {
        let mut v = sample();
        v["form"] = json!("AE");
        v["items"] = json!({"AETERM": "x".repeat(201), "AESER": "maybe", "AESTDAT": "2026-11-01"});
        assert_eq!(checks(&v), vec!["AESER", "AETERM"]);
    }

    #[test]
    fn alerts_fire_on_their_condition_only() {
        let mut v = sample();
        v["items"]["SYSBP"] = json!(185);
        assert_eq!(run(&v).ok().unwrap().alerts, vec!["HTN_CRISIS"]);
        let mut v = sample();
        v["form"] = json!("AE");
        v["items"] = json!({"AETERM": "Anaphylaxis", "AESER": "Y", "AESTDAT": "2026-11-20"});
        assert_eq!(run(&v).ok().unwrap().alerts, vec!["SAE"]);
        v["items"]["AESER"] = json!("N");
        assert!(run(&v).ok().unwrap().alerts.is_empty());
        assert!(run(&sample()).ok().unwrap().alerts.is_empty());
    }

    #[test]
    fn structural_problems_are_invalid() {
        let cases: Vec<(&str, Value)> = vec![
            ("study", json!("NOPE")),
            ("site", json!("SITE-99")),
            ("visit", json!("WEEK99")),
            ("form", json!("XX")),
        ];
        for (field, value) in cases {
            let mut v = sample();
            v[field] = value;
            let r = run(&v).err().unwrap();
            assert_eq!(r.kind, RejectKind::Invalid, "{field}");
            assert!(
                !r.reason.contains("99") && !r.reason.contains("NOPE"),
                "{}",
                r.reason
            );
        }
        for (item, value) in [
            ("SYSBP", json!("abc")),
            ("SYSBP", json!(12.5)),
            ("VSDAT", json!("20-11-2026")),
            ("NEWITEM", json!(1)),
        ] {
            let mut v = sample();
            v["items"][item] = value;
            assert_eq!(run(&v).err().unwrap().kind, RejectKind::Invalid, "{item}");
        }
    }
}
