//! One protocol file, from YAML to a [`Protocol`] ready to validate against: every key checked,
//! every CEL expression compiled once, every problem of the file reported (not only the first).

use std::collections::{BTreeMap, HashSet};

use chrono::NaiveDate;
use serde::Deserialize;

use super::{Alert, CONTEXT_VARIABLES, Check, Form, Item, ItemType, Protocol};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProtocolFile {
    study: String,
    version: String,
    /// First day this version is in force (by the record's `captured_at`); absent means "always".
    #[serde(default)]
    effective_from: Option<NaiveDate>,
    /// Last day this version is in force; absent means "until a later version takes over".
    #[serde(default)]
    effective_to: Option<NaiveDate>,
    #[serde(default)]
    title: Option<String>,
    sites: Vec<String>,
    visits: Vec<String>,
    forms: BTreeMap<String, FormFile>,
    /// Conditions that raise an `alert.raised` event (a serious adverse event, a hypertensive crisis).
    #[serde(default)]
    alerts: Vec<AlertFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertFile {
    id: String,
    when: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FormFile {
    #[serde(default)]
    title: Option<String>,
    items: BTreeMap<String, Item>,
    #[serde(default)]
    checks: Vec<CheckFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckFile {
    id: String,
    assert: String,
    message: String,
}

impl Protocol {
    /// Parses and checks one protocol file; returns every problem found, not only the first.
    pub fn parse(text: &str) -> Result<Protocol, Vec<String>> {
        let file: ProtocolFile = serde_saphyr::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        if file.study.trim().is_empty() {
            problems.push("study must not be empty".to_string());
        }
        if let (Some(from), Some(to)) = (file.effective_from, file.effective_to)
            && to < from
        {
            problems.push(format!("effective_to {to} is before effective_from {from}"));
        }
        if file.version.trim().is_empty() {
            problems.push("version must not be empty".to_string());
        }
        if file.sites.is_empty() {
            problems.push("sites must list at least one site".to_string());
        }
        if file.visits.is_empty() {
            problems.push("visits must list at least one visit".to_string());
        }
        let _ = (&file.title,);
        let mut forms = BTreeMap::new();
        for (form_name, form) in file.forms {
            let _ = &form.title;
            let mut seen_ids = HashSet::new();
            for (item_name, item) in &form.items {
                problems.extend(
                    item.problems()
                        .into_iter()
                        .map(|p| format!("form {form_name}, item {item_name}: {p}")),
                );
            }
            let mut checks = Vec::new();
            for check in form.checks {
                if !seen_ids.insert(check.id.clone()) {
                    problems.push(format!(
                        "form {form_name}: check id {} is used twice",
                        check.id
                    ));
                }
                match compile_expression(&check.assert, &form.items) {
                    Ok((program, items)) => checks.push(Check {
                        id: check.id,
                        message: check.message,
                        source: check.assert,
                        program,
                        items,
                    }),
                    Err(e) => problems.push(format!("form {form_name}, check {}: {e}", check.id)),
                }
            }
            forms.insert(
                form_name,
                Form {
                    items: form.items,
                    checks,
                },
            );
        }
        // Alerts may read the items of any form.
        let all_items: BTreeMap<String, Item> = forms
            .values()
            .flat_map(|f| f.items.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect();
        let mut alerts = Vec::new();
        let mut alert_ids = HashSet::new();
        for alert in file.alerts {
            if !alert_ids.insert(alert.id.clone()) {
                problems.push(format!("alert id {} is used twice", alert.id));
            }
            match compile_expression(&alert.when, &all_items) {
                Ok((program, _)) => alerts.push(Alert {
                    id: alert.id,
                    source: alert.when,
                    program,
                }),
                Err(e) => problems.push(format!("alert {}: {e}", alert.id)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Protocol {
            study: file.study,
            version: file.version,
            effective_from: file.effective_from,
            effective_to: file.effective_to,
            sites: file.sites.into_iter().collect(),
            visits: file.visits.into_iter().collect(),
            forms,
            alerts,
        })
    }
}

impl Item {
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let numeric = matches!(self.kind, ItemType::Integer | ItemType::Decimal);
        if let Some([lo, hi]) = self.range {
            if !numeric {
                p.push("range is only for integer and decimal items".to_string());
            } else if lo.is_nan() || hi.is_nan() || lo > hi {
                p.push(format!("range [{lo}, {hi}] is empty"));
            }
        }
        match (&self.codes, self.kind) {
            (Some(codes), ItemType::Code) if codes.is_empty() => p.push("codes is empty".into()),
            (None, ItemType::Code) => p.push("a code item needs codes".into()),
            (Some(_), kind) if kind != ItemType::Code => {
                p.push("codes is only for code items".into())
            }
            _ => {}
        }
        if self.max_length.is_some() && self.kind != ItemType::Text {
            p.push("max_length is only for text items".to_string());
        }
        p
    }
}

/// Compiles a CEL expression and checks that it reads only the form's items and the context
/// variables. Returns the program and the items it reads.
pub fn compile_expression(
    source: &str,
    items: &BTreeMap<String, Item>,
) -> Result<(cel::Program, Vec<String>), String> {
    let program = cel::Program::compile(source)
        .map_err(|e| format!("`{source}` is not a valid CEL expression: {e}"))?;
    let mut used = Vec::new();
    for var in program.references().variables() {
        if items.contains_key(var) {
            used.push(var.to_string());
        } else if !CONTEXT_VARIABLES.contains(&var) {
            return Err(format!(
                "`{source}` reads `{var}`, which is neither an item of the form nor one of {}",
                CONTEXT_VARIABLES.join(", ")
            ));
        }
    }
    used.sort();
    Ok((program, used))
}
