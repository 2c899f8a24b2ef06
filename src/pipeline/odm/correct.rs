//! A mapped form instance against its record's latest stored version: the next version to store,
//! or nothing. Pure; the store calls it inside the record's transaction, holding the record's lock,
//! so the latest version it is given is the latest there is.
//!
//! ```text
//! Context ──────────────────────────────────────────────────────────────> Unchanged
//! Remove ── nothing stored, or the latest already removed ─────────────> Unchanged
//!        └─ otherwise ──────────────────────────────> Store (no items, status `removed`)
//! Snapshot / Merge ── apply onto the latest items ── validate ── refused ─> Rejected (invalid)
//!                                                        └─ de-identify ── same items and status
//!                                                           as the latest ─> Unchanged, else Store
//! ```
//!
//! The latest items hold pseudonyms where the protocol says `phi`. A pseudonym kept by a merge
//! (the form instance did not give that item again) cannot be validated as the value it stands
//! for, nor pseudonymised again: it is taken out before validation and put back as it was after
//! de-identification, and the soft findings about it (it is there, so `required` holds) are not
//! raised again; its checks were run when it was first stored.

use serde_json::{Map, Value};

use super::{OdmDelta, OdmForm, apply};
use crate::pipeline::deidentify::{self, Deidentified, PSEUDONYM_PREFIX, Status};
use crate::pipeline::key::Pseudonymizer;
use crate::pipeline::parse::{Envelope, Identifiers};
use crate::pipeline::validate::{self, Finding, Validated};
use crate::pipeline::{RejectKind, Rejected};
use crate::printable::Printable;
use crate::protocol::Form;

/// The status of a withdrawn form's version (see [`Next::Store`]).
pub const REMOVED: &str = "removed";

/// A record's latest stored version: what the next one is decided against.
#[derive(Clone, Debug)]
pub struct Latest {
    pub version: i32,
    /// Its canonical, de-identified items.
    pub items: Value,
    /// `accepted`, `queried` or `removed`.
    pub status: String,
}

/// What a form instance comes to.
#[derive(Debug)]
pub enum Next {
    /// Nothing to store: a Context, the removal of what is not stored or already removed, or the
    /// same items and status as the latest version (a duplicate).
    Unchanged,
    /// Store this as the next version (`version` is the latest's plus one, 1 when none).
    /// `removed`: a withdrawal, stored with status `removed` and no items.
    Store {
        record: Box<Deidentified>,
        removed: bool,
    },
}

/// One pseudonym kept from the latest version: where it is and what it is.
struct Kept {
    row: Option<(String, String)>,
    item: String,
    value: Value,
}

/// The next version of `form`'s record after `latest` (see the module's text).
pub fn next(
    form: &OdmForm,
    latest: Option<&Latest>,
    pseudonymizer: &Pseudonymizer,
) -> Result<Next, Rejected> {
    let version = latest.map_or(1, |l| l.version.saturating_add(1));
    let stored = latest.map_or(&Value::Null, |l| &l.items);
    match &form.delta {
        OdmDelta::Context => return Ok(Next::Unchanged),
        OdmDelta::Remove => {
            return Ok(match latest {
                None => Next::Unchanged,
                Some(l) if l.status == REMOVED => Next::Unchanged,
                Some(_) => Next::Store {
                    record: Box::new(record(form, version, Map::new(), Vec::new(), Vec::new())),
                    removed: true,
                },
            });
        }
        OdmDelta::Snapshot(_) | OdmDelta::Merge(_) => {}
    }
    let Value::Object(mut state) = apply(stored, &form.delta) else {
        return Err(refused(form, "the form's state is not an object".into()));
    };
    let definition = &form.protocol.forms[&form.form];
    let kept = take_kept(definition, &mut state, stored);
    let checked = validate::validate_items(&form.protocol, form.context(), state)
        .map_err(|r| refused(form, r.reason))?;
    let mut findings = checked.findings;
    findings.retain(|f| !kept.iter().any(|k| about(f, k)));
    let validated = Validated {
        envelope: envelope(form, version, checked.items),
        protocol: form.protocol.clone(),
        findings,
        alerts: checked.alerts,
    };
    let mut record = deidentify::deidentify(validated, pseudonymizer);
    if let Value::Object(items) = &mut record.items {
        put_back(items, kept);
    }
    if let Some(l) = latest
        && l.status == record.status.as_str()
        && l.items == record.items
    {
        return Ok(Next::Unchanged);
    }
    Ok(Next::Store {
        record: Box::new(record),
        removed: false,
    })
}

/// Our reason: the form by its position and FormOID, then what is wrong (never a value).
fn refused(form: &OdmForm, reason: String) -> Rejected {
    let mut r = Rejected::new(
        RejectKind::Invalid,
        format!(
            "the form at {} (FormOID {:?}) is refused: {reason}",
            form.at,
            Printable(&form.form)
        ),
    );
    r.record_id = Some(form.record_id);
    r
}

/// The pseudonyms of `phi` items (top-level and in rows) that `state` still holds exactly as
/// `stored` held them, taken out of `state`.
fn take_kept(form: &Form, state: &mut Map<String, Value>, stored: &Value) -> Vec<Kept> {
    let is_kept = |v: Option<&Value>, s: Option<&Value>| matches!((v, s), (Some(Value::String(a)), Some(b)) if a.starts_with(PSEUDONYM_PREFIX) && Some(b) == v);
    let mut kept = Vec::new();
    for (name, def) in &form.items {
        if def.phi
            && is_kept(state.get(name), stored.get(name))
            && let Some(value) = state.remove(name)
        {
            kept.push(Kept {
                row: None,
                item: name.clone(),
                value,
            });
        }
    }
    for (group, def) in &form.groups {
        let Some(Value::Object(rows)) = state.get_mut(group) else {
            continue;
        };
        for (key, row) in rows.iter_mut() {
            let Value::Object(row) = row else { continue };
            let stored_row = stored.get(group).and_then(|g| g.get(key));
            for (name, item) in &def.items {
                let before = stored_row.and_then(|r| r.get(name));
                if item.phi
                    && is_kept(row.get(name), before)
                    && let Some(value) = row.remove(name)
                {
                    kept.push(Kept {
                        row: Some((group.clone(), key.clone())),
                        item: name.clone(),
                        value,
                    });
                }
            }
        }
    }
    kept
}

/// Whether a finding is about a kept pseudonym (it was checked when first stored).
fn about(f: &Finding, k: &Kept) -> bool {
    f.check == k.item
        && match (&f.row, &k.row) {
            (None, None) => true,
            (Some(r), Some((group, key))) => &r.group == group && &r.key == key,
            _ => false,
        }
}

fn put_back(items: &mut Map<String, Value>, kept: Vec<Kept>) {
    for k in kept {
        match k.row {
            None => {
                items.insert(k.item, k.value);
            }
            Some((group, key)) => {
                let rows = items
                    .entry(group)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(rows) = rows {
                    let row = rows.entry(key).or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(row) = row {
                        row.insert(k.item, k.value);
                    }
                }
            }
        }
    }
}

fn envelope(form: &OdmForm, version: i32, items: Map<String, Value>) -> Envelope {
    Envelope {
        record_id: form.record_id,
        version,
        study: form.study.clone(),
        site: form.site.clone(),
        subject: form.subject.clone(),
        visit: form.visit.clone(),
        form: form.form.clone(),
        captured_at: form.captured_at,
        entered_by: form.entered_by.clone(),
        batch: None,
        identifiers: Identifiers::default(),
        items,
    }
}

/// A version with these items, findings and alerts (a removal has none of them).
fn record(
    form: &OdmForm,
    version: i32,
    items: Map<String, Value>,
    findings: Vec<Finding>,
    alerts: Vec<String>,
) -> Deidentified {
    Deidentified {
        record_id: form.record_id,
        version,
        study: form.study.clone(),
        site: form.site.clone(),
        subject: form.subject.clone(),
        visit: form.visit.clone(),
        form: form.form.clone(),
        captured_at: form.captured_at,
        entered_by: form.entered_by.clone(),
        batch_id: None,
        batch_size: None,
        protocol_version: form.protocol.version.clone(),
        items: Value::Object(items),
        pseudonyms: Value::Object(Map::new()),
        birth_year: None,
        status: if findings.is_empty() {
            Status::Accepted
        } else {
            Status::Queried
        },
        findings,
        alerts,
    }
}
