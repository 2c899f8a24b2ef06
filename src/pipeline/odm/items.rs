//! A form instance's item values against the form the protocol defines, into an [`OdmDelta`].
//!
//! - **Where an item goes.** An ItemGroupData whose ItemGroupOID is one of the form's repeating
//!   groups is a row of it (its ItemGroupRepeatKey is the row's key, `"1"` when absent), and its
//!   items must be that group's. Any other ItemGroupData (a non-repeating group, which the
//!   protocol folds into the form; an empty ItemGroupOID) puts its items on the form, and they must
//!   be the form's own. An item the form does not define refuses the form, as do items given in
//!   the wrong place (a group's item outside its group, a form item inside a repeating group).
//! - **Values.** Each value is read with [`value::from_text`] into the canonical JSON of its
//!   item's type. `IsNull="Yes"`, an ItemData without a value and an empty value are null. XML
//!   Schema collapses the whitespace of typed values, so surrounding whitespace is ignored except
//!   for `text` items and text codes, whose whitespace is content. A value not of its type, any
//!   value of a `binary` item, and a value stated in a unit its item does not accept
//!   ([`Item::accepts_unit`]: the MeasurementUnitOID is compared as written with the item's
//!   `units`, else its `unit`) refuse the form.
//! - **Transactions.** Each element's TransactionType, else its parent's (subject -> event ->
//!   form -> item group -> item). At the form: Remove -> [`OdmDelta::Remove`]; Insert, or none in
//!   a file that is not Transactional -> [`OdmDelta::Snapshot`]; Update, Upsert, or none in a
//!   Transactional file -> [`OdmDelta::Merge`]; Context -> a merge of what the elements below
//!   change on their own account, [`OdmDelta::Context`] when they change nothing. Below the form:
//!   an item group's Remove removes the row (a non-repeating group's, its items), Insert
//!   replaces the row, Update/Upsert change the items given; an item's Remove removes it, Context
//!   leaves it as stored. In a snapshot, removed items and rows are simply not part of the state.
//! - **The same item twice** in one row or on the form is accepted only when both say the same
//!   (the same canonical value and unit, or both a removal), as real exports repeat items; a row
//!   given twice must be given with the same kind of change.
//!
//! Reasons name items by the protocol's names and by line and column; a value, a repeat key or an
//! OID only the file knows is never shown.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::delta::{ItemChange, Merge, OdmDelta, RowChange};
use super::identity::DEFAULT_REPEAT_KEY;
use crate::odm::model::{FileType, FormInstance, ItemValue, Position, TransactionType as Tx};
use crate::protocol::value::{self, ValueError};
use crate::protocol::{CodeType, Form, Item, ItemType};

/// Why a form's items are refused: a stable code (for counting) and our words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub code: &'static str,
    pub reason: String,
}

fn problem(code: &'static str, reason: String) -> Problem {
    Problem { code, reason }
}

/// The TransactionType in force at the form: its own, else its event's, else its subject's.
pub fn form_transaction(form: &FormInstance) -> Option<Tx> {
    form.tx.or(form.event_tx).or(form.subject_tx)
}

/// Where an item value goes in the protocol's form.
struct Place<'f> {
    group: Option<&'f str>,
    name: &'f str,
    def: &'f Item,
}

/// One item's change as given, to compare a repeated item with.
struct Entry {
    change: ItemChange,
    /// The unit a set, non-null value was stated in.
    unit: Option<String>,
    at: Position,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RowTx {
    Replace,
    Change,
    Remove,
}

struct RowSlot<'f> {
    tx: RowTx,
    at: Position,
    items: BTreeMap<&'f str, Entry>,
}

/// See the module's text.
pub fn delta(
    instance: &FormInstance,
    form: &Form,
    form_name: &str,
    study: &str,
) -> Result<OdmDelta, Problem> {
    let tx = form_transaction(instance);
    let snapshot = match tx {
        Some(Tx::Remove) => return Ok(OdmDelta::Remove),
        Some(Tx::Insert) => true,
        None => instance.file_type != Some(FileType::Transactional),
        Some(Tx::Update | Tx::Upsert | Tx::Context) => false,
    };
    let places = place_all(instance, form, form_name, study)?;
    let mut own: BTreeMap<&str, Entry> = BTreeMap::new();
    let mut rows: BTreeMap<(&str, &str), RowSlot> = BTreeMap::new();
    for (item, place) in instance.items.iter().zip(places) {
        let group_tx = item.group_tx.or(tx);
        let item_tx = item.tx.or(group_tx);
        let Some(group) = place.group else {
            let change = match (group_tx, item_tx) {
                (Some(Tx::Remove), _) | (_, Some(Tx::Remove)) => ItemChange::Remove,
                (_, Some(Tx::Context)) if !snapshot => continue,
                _ => ItemChange::Set(value_of(item, &place)?),
            };
            put(&mut own, place.name, entry(item, change), "on the form")?;
            continue;
        };
        let row_tx = match group_tx {
            Some(Tx::Remove) => RowTx::Remove,
            _ if snapshot => RowTx::Replace,
            Some(Tx::Insert) => RowTx::Replace,
            _ => RowTx::Change,
        };
        let change = match item_tx {
            _ if row_tx == RowTx::Remove => None,
            Some(Tx::Remove) => Some(ItemChange::Remove),
            Some(Tx::Context) if !snapshot => None,
            _ => Some(ItemChange::Set(value_of(item, &place)?)),
        };
        if row_tx != RowTx::Remove && change.is_none() {
            continue;
        }
        let key = item
            .group_repeat
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or(DEFAULT_REPEAT_KEY);
        let slot = rows.entry((group, key)).or_insert_with(|| RowSlot {
            tx: row_tx,
            at: item.at,
            items: BTreeMap::new(),
        });
        if slot.tx != row_tx {
            return Err(problem(
                "conflicting_row",
                format!(
                    "a row of group {group} is given at {} and at {} with different \
                     TransactionTypes",
                    slot.at, item.at
                ),
            ));
        }
        if let Some(change) = change {
            let within = format!("in one row of group {group}");
            put(&mut slot.items, place.name, entry(item, change), &within)?;
        }
    }
    Ok(if snapshot {
        OdmDelta::Snapshot(snapshot_of(own, rows))
    } else {
        let merge = merge_of(own, rows);
        if tx == Some(Tx::Context) && merge.items.is_empty() && merge.groups.is_empty() {
            OdmDelta::Context
        } else {
            OdmDelta::Merge(merge)
        }
    })
}

fn entry(item: &ItemValue, change: ItemChange) -> Entry {
    let unit = match &change {
        ItemChange::Set(v) if !v.is_null() => item.unit_oid.clone(),
        _ => None,
    };
    Entry {
        change,
        unit,
        at: item.at,
    }
}

/// Records `entry` for `name`, or checks it says what the entry already there says.
fn put<'f>(
    slot: &mut BTreeMap<&'f str, Entry>,
    name: &'f str,
    entry: Entry,
    place: &str,
) -> Result<(), Problem> {
    match slot.get(name) {
        None => {
            slot.insert(name, entry);
            Ok(())
        }
        Some(first) if first.change == entry.change && first.unit == entry.unit => Ok(()),
        Some(first) => Err(problem(
            "duplicate_item",
            format!(
                "item {name} is given twice {place} with different values (at {} and at {})",
                first.at, entry.at
            ),
        )),
    }
}

/// Every item's place in the form, or why the form is refused.
fn place_all<'f>(
    instance: &FormInstance,
    form: &'f Form,
    form_name: &str,
    study: &str,
) -> Result<Vec<Place<'f>>, Problem> {
    let mut places = Vec::with_capacity(instance.items.len());
    let (mut undefined, mut first_undefined) = (0usize, None);
    for item in &instance.items {
        let found = match form.groups.get_key_value(item.group_oid.as_str()) {
            Some((group, g)) => g
                .items
                .get_key_value(item.item_oid.as_str())
                .map(|(name, def)| Place {
                    group: Some(group.as_str()),
                    name: name.as_str(),
                    def,
                }),
            None => form
                .items
                .get_key_value(item.item_oid.as_str())
                .map(|(name, def)| Place {
                    group: None,
                    name: name.as_str(),
                    def,
                }),
        };
        if let Some(place) = found {
            places.push(place);
            continue;
        }
        match form.item(&item.item_oid) {
            Some((Some(group), _)) => {
                return Err(problem(
                    "misplaced_item",
                    format!(
                        "item {} at {} belongs to repeating group {group} but is not given in \
                         an ItemGroupData of that group",
                        item.item_oid, item.at
                    ),
                ));
            }
            Some((None, _)) => {
                return Err(problem(
                    "misplaced_item",
                    format!(
                        "item {} at {} is one of form {form_name}'s own items but is given in a \
                         row of repeating group {}",
                        item.item_oid, item.at, item.group_oid
                    ),
                ));
            }
            None => {
                undefined += 1;
                first_undefined = first_undefined.or(Some(item.at));
            }
        }
    }
    match first_undefined {
        None => Ok(places),
        Some(at) => Err(problem(
            "undefined_items",
            format!(
                "{undefined} item(s) not defined by form {form_name} of study {study} (the first \
                 at {at})"
            ),
        )),
    }
}

/// Whether surrounding whitespace is part of an item's values.
fn keeps_whitespace(def: &Item) -> bool {
    match def.kind {
        ItemType::Text => true,
        ItemType::Code => def.code_type.unwrap_or_default() == CodeType::Text,
        _ => false,
    }
}

/// The canonical JSON of an item's value (null when it has none), its unit checked.
fn value_of(item: &ItemValue, place: &Place<'_>) -> Result<Value, Problem> {
    let (name, def, at) = (place.name, place.def, item.at);
    let Some(text) = item.value.as_deref() else {
        return Ok(Value::Null);
    };
    let text = if keeps_whitespace(def) {
        text
    } else {
        text.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
    };
    if text.is_empty() {
        return Ok(Value::Null);
    }
    let value = value::from_text(def, text).map_err(|e| match e {
        ValueError::Binary => problem(
            "binary_item",
            format!("item {name} at {at} is binary: binary items are not accepted"),
        ),
        e => problem("bad_value", format!("item {name} at {at} {e}")),
    })?;
    if let Some(unit) = &item.unit_oid
        && !def.accepts_unit(unit)
    {
        let accepted = match (&def.units, &def.unit) {
            (Some(units), _) => units.join(", "),
            (None, Some(unit)) => unit.clone(),
            (None, None) => String::new(),
        };
        return Err(problem(
            "unit_not_accepted",
            format!(
                "item {name} at {at} is stated in a unit it does not accept (it accepts \
                 {accepted})"
            ),
        ));
    }
    Ok(value)
}

/// The complete state: set items and rows; removed ones left out; no empty row or group.
fn snapshot_of(
    own: BTreeMap<&str, Entry>,
    rows: BTreeMap<(&str, &str), RowSlot<'_>>,
) -> Map<String, Value> {
    let mut state: Map<String, Value> = sets(own);
    for ((group, key), slot) in rows {
        if slot.tx == RowTx::Remove {
            continue;
        }
        let row = sets(slot.items);
        if row.is_empty() {
            continue;
        }
        let rows = state
            .entry(group.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(rows) = rows {
            rows.insert(key.to_string(), Value::Object(row));
        }
    }
    state
}

fn sets(items: BTreeMap<&str, Entry>) -> Map<String, Value> {
    items
        .into_iter()
        .filter_map(|(name, e)| match e.change {
            ItemChange::Set(v) => Some((name.to_string(), v)),
            ItemChange::Remove => None,
        })
        .collect()
}

fn merge_of(own: BTreeMap<&str, Entry>, rows: BTreeMap<(&str, &str), RowSlot<'_>>) -> Merge {
    let mut merge = Merge {
        items: own
            .into_iter()
            .map(|(name, e)| (name.to_string(), e.change))
            .collect(),
        groups: BTreeMap::new(),
    };
    for ((group, key), slot) in rows {
        let change = match slot.tx {
            RowTx::Remove => RowChange::Remove,
            RowTx::Replace => RowChange::Replace(sets(slot.items)),
            RowTx::Change => RowChange::Change(
                slot.items
                    .into_iter()
                    .map(|(name, e)| (name.to_string(), e.change))
                    .collect(),
            ),
        };
        merge
            .groups
            .entry(group.to_string())
            .or_default()
            .insert(key.to_string(), change);
    }
    merge
}
