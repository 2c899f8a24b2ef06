//! What one ODM form instance does to its record, as data ([`OdmDelta`]), and the one pure
//! function that applies it to the record's latest stored state ([`apply`]).
//!
//! A state is the canonical `items` of a record version: the form's own items (those of its
//! non-repeating groups included) by name, and each repeating group as an object of rows by repeat
//! key, `{"I.AEYN": true, "IG.AELOG": {"1": {"I.AETERM": "..."}, "2": {...}}}`. A state never holds
//! an empty row nor a group without rows: a row whose last item is removed goes, and so does a
//! group whose last row goes. Values already stored (pseudonyms of `phi` items included) are kept
//! as they are: `apply` moves values, it never reads them.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// What a form instance does to its record. `Debug` shows names and counts, never a value or a
/// repeat key.
#[derive(Clone, PartialEq)]
pub enum OdmDelta {
    /// The complete state of the form's items: a FormData with TransactionType Insert, or with
    /// none in a Snapshot file. What was stored before does not matter.
    Snapshot(Map<String, Value>),
    /// Changes to the latest stored state (Update, Upsert; or no TransactionType in a
    /// Transactional file): only the items and rows named change.
    Merge(Merge),
    /// The form is withdrawn (Remove): a new version with status `removed` and no items.
    Remove,
    /// Nothing changes (Context, with no element below carrying a change of its own).
    Context,
}

/// The changes of a [`OdmDelta::Merge`].
#[derive(Clone, Default, PartialEq)]
pub struct Merge {
    /// The form's own items set or removed.
    pub items: BTreeMap<String, ItemChange>,
    /// Rows of repeating groups, by group name, then by repeat key.
    pub groups: BTreeMap<String, BTreeMap<String, RowChange>>,
}

/// One item's change. `Set(Value::Null)` is an item deliberately left empty (`IsNull="Yes"`, or an
/// ItemData without a value): it stays in the state, as null; `Remove` takes it out.
#[derive(Clone, PartialEq)]
pub enum ItemChange {
    Set(Value),
    Remove,
}

/// One row's change.
#[derive(Clone, PartialEq)]
pub enum RowChange {
    /// The row is these items (an ItemGroupData with TransactionType Insert): it replaces the
    /// stored row whole.
    Replace(Map<String, Value>),
    /// These items of the row change (Update, Upsert): the row is created if it is not stored.
    Change(BTreeMap<String, ItemChange>),
    /// The row goes (Remove).
    Remove,
}

impl OdmDelta {
    /// `snapshot`, `merge`, `remove` or `context`: for counts and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            OdmDelta::Snapshot(_) => "snapshot",
            OdmDelta::Merge(_) => "merge",
            OdmDelta::Remove => "remove",
            OdmDelta::Context => "context",
        }
    }
}

/// `stored` (the canonical items of the record's latest version; `Value::Null` when nothing is
/// stored yet) with `delta` applied:
/// - `Snapshot(items)`: `items`, whatever was stored;
/// - `Merge`: `stored` with each item set or removed, each row replaced, changed or removed (a
///   stored value that is not an object counts as no state at all);
/// - `Remove`: `{}` (the store marks the version `removed`);
/// - `Context`: `stored` unchanged.
///
/// Pure and total: it never panics, and applying a delta twice gives what applying it once gave.
pub fn apply(stored: &Value, delta: &OdmDelta) -> Value {
    match delta {
        OdmDelta::Snapshot(items) => Value::Object(items.clone()),
        OdmDelta::Remove => Value::Object(Map::new()),
        OdmDelta::Context => stored.clone(),
        OdmDelta::Merge(merge) => {
            let mut state = stored.as_object().cloned().unwrap_or_default();
            merge_into(&mut state, merge);
            Value::Object(state)
        }
    }
}

fn merge_into(state: &mut Map<String, Value>, merge: &Merge) {
    set_items(state, &merge.items);
    for (group, rows) in &merge.groups {
        let mut stored_rows = match state.remove(group) {
            Some(Value::Object(rows)) => rows,
            _ => Map::new(),
        };
        for (key, change) in rows {
            match change {
                RowChange::Remove => {
                    stored_rows.remove(key);
                }
                RowChange::Replace(items) => {
                    if items.is_empty() {
                        stored_rows.remove(key);
                    } else {
                        stored_rows.insert(key.clone(), Value::Object(items.clone()));
                    }
                }
                RowChange::Change(items) => {
                    let mut row = match stored_rows.remove(key) {
                        Some(Value::Object(row)) => row,
                        _ => Map::new(),
                    };
                    set_items(&mut row, items);
                    if !row.is_empty() {
                        stored_rows.insert(key.clone(), Value::Object(row));
                    }
                }
            }
        }
        if !stored_rows.is_empty() {
            state.insert(group.clone(), Value::Object(stored_rows));
        }
    }
}

fn set_items(target: &mut Map<String, Value>, changes: &BTreeMap<String, ItemChange>) {
    for (name, change) in changes {
        match change {
            ItemChange::Set(v) => {
                target.insert(name.clone(), v.clone());
            }
            ItemChange::Remove => {
                target.remove(name);
            }
        }
    }
}

impl fmt::Debug for OdmDelta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OdmDelta::Snapshot(items) => {
                let names: Vec<_> = items
                    .iter()
                    .map(|(k, v)| match v {
                        Value::Object(rows) => format!("{k} ({} rows)", rows.len()),
                        _ => k.clone(),
                    })
                    .collect();
                write!(f, "Snapshot({names:?}, values redacted)")
            }
            OdmDelta::Merge(m) => write!(f, "Merge({m:?})"),
            OdmDelta::Remove => f.write_str("Remove"),
            OdmDelta::Context => f.write_str("Context"),
        }
    }
}

impl fmt::Debug for Merge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .items
            .iter()
            .map(|(k, c)| format!("{k}: {c:?}"))
            .collect();
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|(g, rows)| {
                let (mut replaced, mut changed, mut removed) = (0, 0, 0);
                for r in rows.values() {
                    match r {
                        RowChange::Replace(_) => replaced += 1,
                        RowChange::Change(_) => changed += 1,
                        RowChange::Remove => removed += 1,
                    }
                }
                format!("{g}: {replaced} replaced, {changed} changed, {removed} removed rows")
            })
            .collect();
        write!(f, "items {items:?}, groups {groups:?}")
    }
}

impl fmt::Debug for ItemChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemChange::Set(Value::Null) => f.write_str("Set(null)"),
            ItemChange::Set(_) => f.write_str("Set(<redacted>)"),
            ItemChange::Remove => f.write_str("Remove"),
        }
    }
}

impl fmt::Debug for RowChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowChange::Replace(items) => write!(f, "Replace({} items)", items.len()),
            RowChange::Change(items) => write!(f, "Change({items:?})"),
            RowChange::Remove => f.write_str("Remove"),
        }
    }
}
