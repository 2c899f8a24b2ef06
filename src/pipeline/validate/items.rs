//! One form's items, or one row of a repeating group: every value in its canonical form, type
//! errors and hard ranges refused, the soft rules (required, range, codes, length, digits) as
//! findings. And the rows of a group as an uploader sends them (an array, or an object by repeat
//! key), in their canonical order.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Finding, RowRef};
use crate::protocol::value::{self, number};
use crate::protocol::{Group, Item, ItemType};

/// How a row is named: `IG.AELOG row 2`, or `IG.AELOG, the row at position 3` when its repeat key
/// is not a plain number (uploader text is never printed).
pub struct RowLabel {
    pub group: String,
    pub key: String,
    pub shown: String,
}

impl RowLabel {
    pub fn new(group: &str, key: &str, position: usize) -> RowLabel {
        let shown = if plain_number(key).is_some() {
            format!("{group} row {key}")
        } else {
            format!("{group}, the row at position {position}")
        };
        RowLabel {
            group: group.to_string(),
            key: key.to_string(),
            shown,
        }
    }

    pub fn row_ref(&self) -> RowRef {
        RowRef {
            group: self.group.clone(),
            key: self.key.clone(),
        }
    }
}

/// A repeat key that is a positive integer without leading zeros, of at most 9 digits.
fn plain_number(key: &str) -> Option<u32> {
    let ok = !key.is_empty()
        && key.len() <= 9
        && !key.starts_with('0')
        && key.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| key.parse().ok()).flatten()
}

/// A row of a group: its repeat key and its items.
pub type Row = (String, Map<String, Value>);

/// The rows of a group's value: an array of row objects (repeat keys "1".."n") or an object of
/// repeat key -> row object, in canonical order (plain-number keys first, in numeric order, then
/// the others by their bytes).
pub fn rows(group: &str, value: Value) -> Result<Vec<Row>, String> {
    let not_row = |position: usize| {
        format!("group {group}: the row at position {position} is not an object of items")
    };
    let mut rows: Vec<Row> = match value {
        Value::Array(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, row)| match row {
                Value::Object(m) => Ok(((i + 1).to_string(), m)),
                _ => Err(not_row(i + 1)),
            })
            .collect::<Result<_, _>>()?,
        Value::Object(map) => map
            .into_iter()
            .enumerate()
            .map(|(i, (key, row))| match row {
                Value::Object(m) if !key.is_empty() => Ok((key, m)),
                Value::Object(_) => Err(format!(
                    "group {group}: the row at position {} has an empty repeat key",
                    i + 1
                )),
                _ => Err(not_row(i + 1)),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(format!(
                "group {group} must be an array of rows or an object of rows by repeat key"
            ));
        }
    };
    rows.sort_by(|(a, _), (b, _)| match (plain_number(a), plain_number(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    });
    Ok(rows)
}

/// One row of `group`: its items defined, canonical and checked.
pub fn check_row(
    group: &Group,
    row: &mut Map<String, Value>,
    label: &RowLabel,
    findings: &mut Vec<Finding>,
) -> Result<(), String> {
    let undefined = row
        .keys()
        .filter(|k| !group.items.contains_key(k.as_str()))
        .count();
    if undefined > 0 {
        return Err(format!(
            "{}: {undefined} item(s) not defined by the group",
            label.shown
        ));
    }
    check_items(&group.items, row, Some(label), findings)
}

/// The items `defs` of `items` (a form's, or a row's when `row` says which).
pub fn check_items(
    defs: &BTreeMap<String, Item>,
    items: &mut Map<String, Value>,
    row: Option<&RowLabel>,
    findings: &mut Vec<Finding>,
) -> Result<(), String> {
    let prefix = row.map(|r| format!("{}: ", r.shown)).unwrap_or_default();
    let mut soft = |check: &str, message: String| {
        findings.push(Finding {
            check: check.to_string(),
            message: format!("{prefix}{message}"),
            row: row.map(RowLabel::row_ref),
        })
    };
    for (name, def) in defs {
        match items.get_mut(name) {
            None | Some(Value::Null) => {
                if def.required {
                    soft(name, format!("{name} is required but missing"));
                }
            }
            Some(value) => {
                check_item(name, def, value, &mut |m| soft(name, m)).map_err(|e| match row {
                    Some(r) => format!("{}: {e}", r.shown),
                    None => e,
                })?
            }
        }
    }
    Ok(())
}

/// Type errors and hard ranges are structural (refuse); range, code, length and digits are soft (a
/// finding). Rewrites `value` in its canonical form.
fn check_item(
    name: &str,
    def: &Item,
    value: &mut Value,
    soft: &mut dyn FnMut(String),
) -> Result<(), String> {
    if let Some(c) = value::canonical(def, value).map_err(|e| format!("item {name} {e}"))? {
        *value = c;
    }
    let unit = def
        .unit
        .as_deref()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    match (def.kind, &*value) {
        (ItemType::Text, Value::String(s)) => {
            if let Some(max) = def.max_length
                && s.chars().count() > max
            {
                soft(format!("{name} is longer than {max} characters"));
            }
        }
        (ItemType::Code, Value::String(s)) => {
            if let Some(codes) = &def.codes
                && !codes.contains(s)
            {
                let list: Vec<&str> = codes.codes().collect();
                soft(format!(
                    "{name} is not one of the codes {}",
                    list.join(", ")
                ));
            }
        }
        (ItemType::Integer | ItemType::Decimal, Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if let Some([lo, hi]) = def.hard_range
                && !(lo..=hi).contains(&x)
            {
                return Err(format!(
                    "item {name} is outside its hard range [{lo}, {hi}]{unit}"
                ));
            }
            if let Some([lo, hi]) = def.range
                && !(lo..=hi).contains(&x)
            {
                let side = if x < lo { "below" } else { "above" };
                soft(format!(
                    "{name} is {side} the expected range [{lo}, {hi}]{unit}"
                ));
            }
            if def.digits.is_some() || def.fraction_digits.is_some() {
                let (all, fraction) = number::digit_counts(&number::number_text(n));
                if let Some(d) = def.digits
                    && all > d as usize
                {
                    soft(format!("{name} has more than {d} significant digits"));
                }
                if let Some(f) = def.fraction_digits
                    && fraction > f as usize
                {
                    soft(format!(
                        "{name} has more than {f} digits after the decimal point"
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}
