//! Stage 2: an [`Envelope`] checked against the study protocol in force when it was captured.
//!
//! Two kinds of problem, kept apart on purpose:
//! - **structural** (unknown study, site, visit, form, group or item; a value not of its item's
//!   type; a value outside its item's `hard_range`; a `hard` check that fails): the record cannot be
//!   interpreted or must not be stored, so it is refused as `invalid`;
//! - **soft** (a required item missing, out of range, a code outside its list, a text too long,
//!   too many digits, an edit check false or undecidable): the record is stored as `queried` with one
//!   [`Finding`] each, as an EDC raises a query to the site instead of throwing data away.
//!
//! Every value is rewritten in its canonical form (`protocol::value`), and a repeating group in
//! the object form `{repeat key: row}` (an uploader may send an array of rows: keys "1".."n").
//! Rows are named in findings and reasons by their repeat key when it is a plain number (`row 2`),
//! else by their position (`the row at position 2`): a repeat key is uploader text and is never
//! printed. Rows are ordered by repeat key, numeric keys first in numeric order.

mod checks;
mod items;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_groups;

use std::sync::Arc;

use serde_json::{Map, Value};

use super::parse::Envelope;
use super::{RejectKind, Rejected};
use crate::protocol::{Protocol, Registry};

/// One failed soft check: the check id (or the item name) and a message for the site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub check: String,
    pub message: String,
    /// The row of a repeating group it is about, if any.
    pub row: Option<RowRef>,
}

/// A row of a repeating group: the group's name and the row's repeat key (uploader text, to store,
/// never to print).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowRef {
    pub group: String,
    pub key: String,
}

/// A record that passed the structural checks, with its soft findings.
pub struct Validated {
    pub envelope: Envelope,
    pub protocol: Arc<Protocol>,
    pub findings: Vec<Finding>,
    /// Ids of the protocol's alerts this record raises.
    pub alerts: Vec<String>,
}

/// Where a record stands: what its expressions see as `study`, `site`, `visit` and `form`.
#[derive(Clone, Copy, Debug)]
pub struct RecordContext<'a> {
    pub study: &'a str,
    pub site: &'a str,
    pub visit: &'a str,
    pub form: &'a str,
}

/// A form's items validated: canonical, with the findings and the alerts raised. Not `Debug`: its
/// items still hold protected values (de-identification comes next).
pub struct Checked {
    pub items: Map<String, Value>,
    pub findings: Vec<Finding>,
    pub alerts: Vec<String>,
}

fn invalid(reason: impl Into<String>) -> Rejected {
    Rejected::new(RejectKind::Invalid, reason)
}

pub fn validate(mut envelope: Envelope, registry: &Registry) -> Result<Validated, Rejected> {
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
    let items = std::mem::take(&mut envelope.items);
    let context = RecordContext {
        study: &envelope.study,
        site: &envelope.site,
        visit: &envelope.visit,
        form: &envelope.form,
    };
    let checked = validate_items(&protocol, context, items)?;
    envelope.items = checked.items;
    Ok(Validated {
        envelope,
        protocol,
        findings: checked.findings,
        alerts: checked.alerts,
    })
}

/// Validates the items of one record of `context.form` against `protocol` (whose study, site and
/// visit the caller has checked): types, required items, ranges, codes, lengths, digits, group
/// rows, edit checks and alerts. The path every source takes (a JSON upload, an ODM form instance).
pub fn validate_items(
    protocol: &Protocol,
    context: RecordContext<'_>,
    mut items: Map<String, Value>,
) -> Result<Checked, Rejected> {
    let study = &protocol.study;
    let form_name = context.form;
    let Some(form) = protocol.forms.get(form_name) else {
        return Err(invalid(format!("form is not one of study {study}'s forms")));
    };
    let undefined = items
        .keys()
        .filter(|k| !form.items.contains_key(k.as_str()) && !form.groups.contains_key(k.as_str()))
        .count();
    if undefined > 0 {
        return Err(invalid(format!(
            "{undefined} item(s) not defined by form {form_name} of study {study}"
        )));
    }
    let mut findings = Vec::new();
    items::check_items(&form.items, &mut items, None, &mut findings).map_err(invalid)?;
    let mut groups = Vec::with_capacity(form.groups.len());
    for (name, group) in &form.groups {
        let rows = match items.remove(name) {
            None => continue,
            Some(Value::Null) => {
                items.insert(name.clone(), Value::Null);
                continue;
            }
            Some(v) => items::rows(name, v).map_err(invalid)?,
        };
        let mut checked_rows = Vec::with_capacity(rows.len());
        for (position, (key, mut row)) in rows.into_iter().enumerate() {
            let label = items::RowLabel::new(name, &key, position + 1);
            items::check_row(group, &mut row, &label, &mut findings).map_err(invalid)?;
            checked_rows.push((key, row));
        }
        groups.push((name.as_str(), group, checked_rows));
    }
    let alerts = checks::run(protocol, form, context, &items, &groups, &mut findings)?;
    for (name, _, rows) in groups {
        let object: Map<String, Value> = rows
            .into_iter()
            .map(|(key, row)| (key, Value::Object(row)))
            .collect();
        items.insert(name.to_string(), Value::Object(object));
    }
    Ok(Checked {
        items,
        findings,
        alerts,
    })
}
