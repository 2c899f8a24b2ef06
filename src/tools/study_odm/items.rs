//! One ItemDef -> one protocol item: its type and bounds, codes, units, label and question, range
//! checks ([`super::ranges`]) and the PHI guess ([`super::phi`]). Each ItemDef is converted once,
//! whatever the number of forms that use it, so its lines are printed once.
//!
//! - DataType: `integer` -> integer (Length -> `digits`); `float`, `double` -> decimal (Length ->
//!   `digits`, SignificantDigits -> `fraction_digits`); `text`, `string` -> text (Length ->
//!   `max_length`); `date`, `time`, `datetime`, `boolean`, `partialDate`, `partialTime`,
//!   `partialDatetime` -> the same; `base64Binary`, `hexBinary`, `base64Float`, `hexFloat` ->
//!   binary; `URI`, `durationDatetime`, `intervalDatetime`, `incompleteDate/Time/Datetime` and
//!   anything else -> text, listed. Length on other types means nothing and is not used.
//! - CodeListRef on an integer, decimal or text item -> a `code` item: `codes` a map code ->
//!   decode when the list has decodes (English, else the first), else a list; `code_type` from the
//!   CodeList's DataType. Codes not of that type make it a text code list; a code given twice
//!   (after its canonical form: `01` and `1` on integer codes) is kept once. An external code list
//!   (MedDRA) or an empty one leaves the item of its own type, listed. A boolean item keeps no
//!   codes (its decodes are listed).
//! - MeasurementUnitRef: one -> `unit` (the unit's OID, as ItemData name it); several on a number
//!   -> `units` (all of them, a value must state one) and `unit` (the first); several on another
//!   type -> `unit` (the first), the others listed.

use std::collections::HashMap;

use crate::odm::metadata::{CodeList, ItemDef};
use crate::protocol::value::canonical_code;
use crate::protocol::{CodeType, Codes, Item, ItemType};

use super::phi;
use super::ranges::{self, distinct, type_name};
use super::report::{Kind, Report, shown};

/// An ItemDef converted: the item (without `required`, which is the ItemRef's), its checks.
#[derive(Clone)]
pub(super) struct Converted {
    pub item: Item,
    pub checks: Vec<crate::protocol::file::CheckFile>,
    pub flipped: bool,
    pub range_checks: usize,
}

/// The ODM DataType's item type, and whether it is a reading of a type the model lacks.
fn base_type(data_type: Option<&str>) -> (ItemType, bool) {
    match data_type {
        Some("integer") => (ItemType::Integer, false),
        Some("float" | "double") => (ItemType::Decimal, false),
        Some("text" | "string") => (ItemType::Text, false),
        Some("date") => (ItemType::Date, false),
        Some("time") => (ItemType::Time, false),
        Some("datetime") => (ItemType::Datetime, false),
        Some("boolean") => (ItemType::Boolean, false),
        Some("partialDate") => (ItemType::PartialDate, false),
        Some("partialTime") => (ItemType::PartialTime, false),
        Some("partialDatetime") => (ItemType::PartialDatetime, false),
        Some("base64Binary" | "hexBinary" | "base64Float" | "hexFloat") => {
            (ItemType::Binary, false)
        }
        _ => (ItemType::Text, true),
    }
}

fn code_type(data_type: Option<&str>) -> CodeType {
    match data_type {
        Some("integer") => CodeType::Integer,
        Some("float" | "double") => CodeType::Decimal,
        _ => CodeType::Text,
    }
}

/// A positive whole number of an attribute (Length, SignificantDigits).
fn count(text: &Option<String>) -> Option<Result<u32, ()>> {
    text.as_ref()
        .map(|t| t.trim().parse::<u32>().map_err(|_| ()))
}

pub(super) fn convert(
    def: &ItemDef,
    code_lists: &HashMap<&str, &CodeList>,
    report: &mut Report,
) -> Converted {
    let name = shown(&def.oid);
    let (mut kind, unknown) = base_type(def.data_type.as_deref());
    if unknown {
        let why = match def.data_type.as_deref() {
            Some(t) => format!("DataType {} has no type in the protocol", shown(t)),
            None => "no DataType".to_string(),
        };
        report.group(
            Kind::NotConverted,
            &format!("{why}: made text items"),
            name.clone(),
        );
    }
    let mut item = Item {
        kind,
        ..Item::default()
    };
    // Code lists.
    if let Some(cl_oid) = &def.code_list {
        match code_lists.get(cl_oid.as_str()) {
            None => report.not_converted(format!(
                "item {name}: its CodeListRef names {}, which the metadata version does not define",
                shown(cl_oid)
            )),
            Some(list) => match kind {
                ItemType::Integer | ItemType::Decimal | ItemType::Text => {
                    if let Some((codes, ct)) = codes_of(&name, list, report) {
                        item.kind = ItemType::Code;
                        item.codes = Some(codes);
                        item.code_type = Some(ct).filter(|c| *c != CodeType::Text);
                        kind = ItemType::Code;
                    }
                }
                ItemType::Boolean => report.group(
                    Kind::NotConverted,
                    "the code lists of boolean items (their labels of true and false)",
                    name.clone(),
                ),
                other => report.not_converted(format!(
                    "item {name}: a {} item keeps no code list ({})",
                    type_name(other),
                    shown(cl_oid)
                )),
            },
        }
    }
    // Length and SignificantDigits.
    let length = count(&def.length);
    let fraction = count(&def.significant_digits);
    match (kind, length) {
        (ItemType::Text, Some(Ok(n))) if n > 0 => item.max_length = Some(n as usize),
        (ItemType::Integer | ItemType::Decimal, Some(Ok(n))) if n > 0 => item.digits = Some(n),
        (ItemType::Text | ItemType::Integer | ItemType::Decimal, Some(_)) => {
            report.not_converted(format!("item {name}: its Length is not a positive number"))
        }
        _ => {}
    }
    match (kind, fraction) {
        (ItemType::Decimal, Some(Ok(f))) if item.digits.is_none_or(|d| f <= d) => {
            item.fraction_digits = Some(f)
        }
        (ItemType::Decimal, Some(_)) => report.not_converted(format!(
            "item {name}: its SignificantDigits is not a number of digits at most its Length"
        )),
        (_, Some(_)) => report.group(
            Kind::NotConverted,
            "SignificantDigits on items that are not decimals",
            name.clone(),
        ),
        _ => {}
    }
    // Units.
    let units = distinct(&def.units);
    match units.as_slice() {
        [] => {}
        [one] => item.unit = Some(one.to_string()),
        [first, ..] if kind.is_numeric() => {
            item.unit = Some(first.to_string());
            item.units = Some(units.iter().map(|u| u.to_string()).collect());
            report.group(
                Kind::Note,
                "items that accept several units (units: a value must state one of them)",
                name.clone(),
            );
        }
        [first, ..] => {
            item.unit = Some(first.to_string());
            report.not_converted(format!(
                "item {name}: units beyond the first ({} more): the protocol lists several units \
                 for numbers only",
                units.len() - 1
            ));
        }
    }
    // Label and question.
    let question = def.question.best();
    let label = def
        .name
        .clone()
        .filter(|n| *n != def.oid && !n.trim().is_empty())
        .map(|n| super::tidy(&n))
        .or_else(|| question.clone());
    item.question = question.filter(|q| Some(q) != label.as_ref());
    item.label = label;
    // What REDCap says of when an item is asked and how it is computed.
    if def.vendor_attr("projectredcap", "BranchingLogic").is_some() {
        report.group(
            Kind::NotConverted,
            "REDCap branching logic (when an item is asked: not checked)",
            name.clone(),
        );
    }
    if def.vendor_attr("projectredcap", "Calculation").is_some() {
        report.group(
            Kind::NotConverted,
            "REDCap calculated fields (the calculation is not run)",
            name.clone(),
        );
    }
    // Range checks, then the PHI guess.
    let ranges = ranges::convert(def, &mut item, report);
    if let Some(reason) = phi::guess(def, kind) {
        item.phi = true;
        report.phi(format!("item {name}: {reason}"));
    }
    Converted {
        item,
        checks: ranges.checks,
        flipped: ranges.flipped,
        range_checks: ranges.converted,
    }
}

/// The codes of a code list and their type; None (listed) when the list cannot give codes.
fn codes_of(item: &str, list: &CodeList, report: &mut Report) -> Option<(Codes, CodeType)> {
    let oid = shown(&list.oid);
    if let Some(dictionary) = &list.external {
        report.not_converted(format!(
            "item {item}: CodeList {oid} refers to the external dictionary {}: its codes are not in \
             the file, so the item keeps its own type",
            shown(dictionary)
        ));
        return None;
    }
    let mut ct = code_type(list.data_type.as_deref());
    if ct != CodeType::Text
        && list
            .items
            .iter()
            .any(|c| canonical_code(ct, c.code.trim()).is_none())
    {
        report.note(format!(
            "CodeList {oid}: its codes are not all {} codes: read as text codes",
            ct.as_str()
        ));
        ct = CodeType::Text;
    }
    let mut entries: Vec<(String, Option<String>)> = Vec::new();
    for c in &list.items {
        let raw = if ct == CodeType::Text {
            c.code.clone()
        } else {
            c.code.trim().to_string()
        };
        let Some(code) = canonical_code(ct, &raw).filter(|c| !c.is_empty()) else {
            report.not_converted(format!("CodeList {oid}: an empty code"));
            continue;
        };
        if entries.iter().any(|(c, _)| *c == code) {
            report.not_converted(format!(
                "CodeList {oid}: code {} is listed twice (as {} codes): kept once",
                shown(&code),
                ct.as_str()
            ));
            continue;
        }
        entries.push((code, c.decode.best()));
    }
    if entries.is_empty() {
        report.not_converted(format!(
            "item {item}: CodeList {oid} has no codes, so the item keeps its own type"
        ));
        return None;
    }
    let codes = if entries.iter().all(|(_, d)| d.is_none()) {
        Codes::list(entries.into_iter().map(|(c, _)| c))
    } else {
        Codes::labelled(entries.into_iter().map(|(c, d)| (c, d.unwrap_or_default())))
    };
    Some((codes, ct))
}
