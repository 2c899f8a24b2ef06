//! Item values: what each item type accepts, from a JSON upload ([`from_json`]) or from text (an
//! ODM `Value`, [`from_text`]), and the ONE canonical form of each value: the JSON stored in a
//! record's `items` and its text ([`canonical_text`], [`stored_text`]), which the `item_values` view
//! shows and the "same content" hash reads. Parsing is strict, never panics, and is idempotent:
//! the canonical form of a canonical value is itself.
//!
//! | type | JSON accepted | text accepted | canonical JSON (text) |
//! |---|---|---|---|
//! | integer | an integer number | `[+-]?digits` | the number (`7` for `007`) |
//! | decimal | a number | `[+-]?d[.d][e[+-]d]`, finite | integral: an integer (`37` for `37.0`); else the shortest double (`36.8` for `36.80`); text in positional notation |
//! | text | a string | any | as given |
//! | date | a `YYYY-MM-DD` string (one-digit month or day still read, as before) | same | `YYYY-MM-DD` |
//! | code | a string; a number too for integer and decimal codes | the code | a string: integer codes without sign or leading zeros (`1` for `01`), decimal codes like decimals, text codes as given |
//! | boolean | `true` / `false` | `true`, `false`, `1`, `0` | `true` / `false` |
//! | time | `hh:mm[:ss[.f]]` + optional offset | same | `hh:mm:ss`, the fraction without trailing zeros, the offset as given (`Z` for a zero offset) |
//! | datetime | `YYYY-MM-DDThh:mm[:ss[.f]]` + optional offset | same | the date, `T`, the time as above |
//! | partial_date / partial_time / partial_datetime | ISO 8601 truncated on the right | same | as given (its precision is part of the value), a zero offset spelt `Z` |
//! | binary | nothing: any value refuses the record | nothing | - |
//!
//! Offsets are kept as given, never converted: `10:00+01:00` and `09:00Z` are the same instant but
//! not the same entry (the local clock time a site recorded is part of what it recorded).

mod cel;
pub mod number;
pub mod temporal;
#[cfg(test)]
mod tests;

pub use cel::{CelInput, Span, literal_span};

use serde_json::Value;
use thiserror::Error;

use super::{CodeType, Item, ItemType};
use number::{decimal_number, decimal_text, number_text, parse_integer};
use temporal::{parse_date, parse_datetime, parse_time};

/// Why a value is not of its item's type: our words, never the value. Shown after the item's name.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("must be an integer")]
    Integer,
    #[error("must be a number")]
    Decimal,
    #[error("must be a text")]
    Text,
    #[error("must be a YYYY-MM-DD date")]
    DateType,
    #[error("is not a YYYY-MM-DD date")]
    Date,
    #[error("must be a code (text)")]
    Code,
    #[error("must be an integer code")]
    IntegerCode,
    #[error("must be a decimal code")]
    DecimalCode,
    #[error("must be true or false")]
    Boolean,
    #[error("is not a time (hh:mm[:ss[.f]], then optionally Z or +hh:mm)")]
    Time,
    #[error("is not a date-time (YYYY-MM-DDThh:mm[:ss[.f]], then optionally Z or +hh:mm)")]
    Datetime,
    #[error("is not a partial date (YYYY, YYYY-MM or YYYY-MM-DD)")]
    PartialDate,
    #[error("is not a partial time (hh[:mm[:ss[.f]]], then optionally Z or +hh:mm)")]
    PartialTime,
    #[error("is not a partial date-time (YYYY[-MM[-DD[Thh[:mm[:ss[.f]]]]]], offset optional)")]
    PartialDatetime,
    #[error("holds binary content, which edc-ingest does not store")]
    Binary,
    #[error("has no value")]
    Missing,
}

/// The canonical JSON of `value` (not null) as a value of `item`.
pub fn from_json(item: &Item, value: &Value) -> Result<Value, ValueError> {
    Ok(canonical(item, value)?.unwrap_or_else(|| value.clone()))
}

/// The canonical JSON of `value` if it differs from `value` itself (`None`: already canonical).
/// What validation uses, so that a canonical value is not copied.
pub fn canonical(item: &Item, value: &Value) -> Result<Option<Value>, ValueError> {
    use ValueError as E;
    let s = value.as_str();
    let keep_or = |text: String| {
        if s == Some(text.as_str()) {
            None
        } else {
            Some(Value::String(text))
        }
    };
    match (item.kind, value) {
        (_, Value::Null) => Err(E::Missing),
        (ItemType::Binary, _) => Err(E::Binary),
        (ItemType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(None),
        (ItemType::Integer, _) => Err(E::Integer),
        (ItemType::Decimal, Value::Number(n)) => {
            let c = decimal_number(n).ok_or(E::Decimal)?;
            Ok((c != *value).then_some(c))
        }
        (ItemType::Decimal, _) => Err(E::Decimal),
        (ItemType::Text, Value::String(_)) => Ok(None),
        (ItemType::Text, _) => Err(E::Text),
        (ItemType::Boolean, Value::Bool(_)) => Ok(None),
        (ItemType::Boolean, _) => Err(E::Boolean),
        (ItemType::Code, Value::String(_))
            if item.code_type.unwrap_or_default() == CodeType::Text =>
        {
            Ok(None)
        }
        (ItemType::Code, _) => code(item.code_type.unwrap_or_default(), value).map(keep_or),
        // The strict shape is its own canonical form.
        (ItemType::Date, Value::String(t)) if parse_date(t).is_some_and(|d| d.is_complete()) => {
            Ok(None)
        }
        (ItemType::Date, Value::String(t)) => date_text(t).map(keep_or).ok_or(E::Date),
        (ItemType::Date, _) => Err(E::DateType),
        (kind, Value::String(t)) => temporal_text(kind, t).map(keep_or),
        (kind, _) => temporal_text(kind, "").map(keep_or),
    }
}

/// The canonical JSON of `text` as a value of `item`: for sources that carry every value as text
/// (an ODM `Value` attribute).
pub fn from_text(item: &Item, text: &str) -> Result<Value, ValueError> {
    use ValueError as E;
    match item.kind {
        ItemType::Binary => Err(E::Binary),
        ItemType::Integer => parse_integer(text).map(Value::Number).ok_or(E::Integer),
        ItemType::Decimal => decimal_text(text).ok_or(E::Decimal),
        ItemType::Boolean => match text {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(E::Boolean),
        },
        _ => from_json(item, &Value::String(text.to_string())),
    }
}

/// The canonical text of `value` as a value of `item`: `stored_text(from_json(item, value))`.
pub fn canonical_text(item: &Item, value: &Value) -> Result<String, ValueError> {
    stored_text(&from_json(item, value)?).ok_or(ValueError::Missing)
}

/// The text of a stored (canonical) scalar: a string as it is, a number in positional notation
/// (as PostgreSQL prints a `jsonb` number), `true` / `false`; `None` for null, lists and objects.
/// In a de-identified record a `phi` item's value is its pseudonym (`psn:...`), a string.
pub fn stored_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(number_text(n)),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A code in its canonical form for its code type.
fn code(kind: CodeType, value: &Value) -> Result<String, ValueError> {
    use ValueError as E;
    match (kind, value) {
        (CodeType::Text, Value::String(s)) => Ok(s.clone()),
        (CodeType::Text, _) => Err(E::Code),
        (CodeType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        (CodeType::Integer, Value::String(s)) => parse_integer(s)
            .map(|n| n.to_string())
            .ok_or(E::IntegerCode),
        (CodeType::Integer, _) => Err(E::IntegerCode),
        (CodeType::Decimal, Value::Number(n)) => decimal_number(n)
            .and_then(|v| v.as_number().map(number_text))
            .ok_or(E::DecimalCode),
        (CodeType::Decimal, Value::String(s)) => decimal_text(s)
            .and_then(|v| v.as_number().map(number_text))
            .ok_or(E::DecimalCode),
        (CodeType::Decimal, _) => Err(E::DecimalCode),
    }
}

/// A code of the protocol's code list in its canonical form (`None`: not of the code type).
pub fn canonical_code(kind: CodeType, code_text: &str) -> Option<String> {
    code(kind, &Value::String(code_text.to_string())).ok()
}

/// A `date`: strictly `YYYY-MM-DD`, or what chrono's `%Y-%m-%d` reads (as edc-ingest always did:
/// `2026-1-5`), written back as `YYYY-MM-DD`.
fn date_text(t: &str) -> Option<String> {
    if let Some(d) = parse_date(t).filter(|d| d.is_complete()) {
        return Some(d.text());
    }
    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .map(|d| d.format("%Y-%m-%d").to_string())
}

/// The day a canonical `date` stands for.
pub(crate) fn date_of(t: &str) -> Option<chrono::NaiveDate> {
    match parse_date(t) {
        Some(d) if d.is_complete() => Some(d.days().0),
        _ => chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").ok(),
    }
}

/// The canonical text of a time, date-time or partial value.
fn temporal_text(kind: ItemType, t: &str) -> Result<String, ValueError> {
    use ValueError as E;
    match kind {
        ItemType::Time => parse_time(t)
            .filter(|p| p.minute.is_some())
            .map(|p| p.canonical())
            .ok_or(E::Time),
        ItemType::PartialTime => parse_time(t)
            .map(|p| p.partial_text())
            .ok_or(E::PartialTime),
        ItemType::PartialDate => parse_date(t).map(|d| d.text()).ok_or(E::PartialDate),
        ItemType::Datetime => match parse_datetime(t) {
            Some((d, Some(time))) if time.minute.is_some() => {
                Ok(format!("{}T{}", d.text(), time.canonical()))
            }
            _ => Err(E::Datetime),
        },
        ItemType::PartialDatetime => match parse_datetime(t) {
            Some((d, None)) => Ok(d.text()),
            Some((d, Some(time))) => Ok(format!("{}T{}", d.text(), time.partial_text())),
            None => Err(E::PartialDatetime),
        },
        // Every other type is handled before; refuse rather than guess.
        _ => Err(E::Text),
    }
}
