//! What a check's CEL expression sees of a stored value, and the span of time a value stands for.
//!
//! integer -> int; decimal -> double; boolean -> bool; text and code -> string; date -> its
//! `YYYY-MM-DD` string; time -> its clock time `hh:mm:ss[.f]` as a string (the offset is not
//! applied: a time of day compares as the site's clock showed it); datetime -> a timestamp (a value
//! without an offset is taken as UTC). A partial value that is truncated is given as its two
//! corners, the first and the last moment it can stand for: a partial date as `YYYY-MM-DD`
//! strings, a partial time as clock strings, a partial date-time as timestamps.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset, Utc};
use serde_json::Value;

use super::date_of;
use super::temporal::{
    DateParts, TimeParts, clock_text, instant_span, parse_date, parse_datetime, parse_time,
};
use crate::protocol::{Item, ItemType};

/// The stretch of time a value stands for, on the calendar (instants, UTC) or on the clock (a time
/// of day). Values of the two kinds never overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Calendar(NaiveDateTime, NaiveDateTime),
    Clock(NaiveTime, NaiveTime),
}

impl Span {
    pub fn overlaps(&self, other: &Span) -> bool {
        match (self, other) {
            (Span::Calendar(a, b), Span::Calendar(c, d)) => a <= d && c <= b,
            (Span::Clock(a, b), Span::Clock(c, d)) => a <= d && c <= b,
            _ => false,
        }
    }
}

/// A value as CEL sees it.
#[derive(Clone, Debug)]
pub enum CelInput {
    /// One value; `span` for dates and times.
    Fixed {
        value: cel::Value,
        span: Option<Span>,
    },
    /// A truncated partial value: its first and last corner.
    Partial {
        first: cel::Value,
        last: cel::Value,
        span: Span,
    },
}

impl CelInput {
    /// The CEL value of a stored (canonical) value of `item`. A value that is not canonical
    /// for its type (it cannot be after validation) is given as it is, never a panic.
    pub fn of(item: &Item, value: &Value) -> CelInput {
        let fixed = |value| CelInput::Fixed { value, span: None };
        let text = |s: &str| cel::Value::String(Arc::new(s.to_string()));
        let Value::String(s) = value else {
            return fixed(match (item.kind, value) {
                (ItemType::Integer, Value::Number(n)) => match n.as_i64() {
                    Some(i) => cel::Value::Int(i),
                    None => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                },
                (_, Value::Number(n)) => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                (_, Value::Bool(b)) => cel::Value::Bool(*b),
                _ => cel::Value::Null,
            });
        };
        let parsed = match item.kind {
            ItemType::Date => date_of(s).map(|d| day_input(s, d)),
            ItemType::Time | ItemType::PartialTime => parse_time(s).map(|t| time_input(&t)),
            ItemType::PartialDate => parse_date(s).map(|d| partial_date_input(&d)),
            ItemType::Datetime | ItemType::PartialDatetime => {
                parse_datetime(s).map(|(d, t)| datetime_input(&d, t.as_ref()))
            }
            _ => None,
        };
        parsed.unwrap_or_else(|| fixed(text(s)))
    }

    /// The one CEL value of a stored value, without its span; `None` for a truncated partial
    /// value (it has two corners). What a context holds for every item a check may read: cheap
    /// for every type but the time and date-time ones (a date is its own text).
    pub fn fixed_value(item: &Item, value: &Value) -> Option<cel::Value> {
        match (item.kind, value) {
            (ItemType::Text | ItemType::Code | ItemType::Date, Value::String(s)) => {
                Some(cel::Value::String(Arc::new(s.clone())))
            }
            _ => match CelInput::of(item, value) {
                CelInput::Fixed { value, .. } => Some(value),
                CelInput::Partial { .. } => None,
            },
        }
    }

    pub fn span(&self) -> Option<Span> {
        match self {
            CelInput::Fixed { span, .. } => *span,
            CelInput::Partial { span, .. } => Some(*span),
        }
    }
}

fn string(s: String) -> cel::Value {
    cel::Value::String(Arc::new(s))
}

fn day_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn day_span(first: NaiveDate, last: NaiveDate) -> Span {
    let end = NaiveTime::from_hms_nano_opt(23, 59, 59, 999_999_999).unwrap_or(NaiveTime::MIN);
    Span::Calendar(first.and_time(NaiveTime::MIN), last.and_time(end))
}

fn day_input(text: &str, d: NaiveDate) -> CelInput {
    CelInput::Fixed {
        value: string(text.to_string()),
        span: Some(day_span(d, d)),
    }
}

fn partial_date_input(d: &DateParts) -> CelInput {
    let (first, last) = d.days();
    if d.is_complete() {
        return day_input(&day_text(first), first);
    }
    CelInput::Partial {
        first: string(day_text(first)),
        last: string(day_text(last)),
        span: day_span(first, last),
    }
}

fn time_input(t: &TimeParts) -> CelInput {
    let (first, last) = t.clock_span();
    if t.is_complete() {
        return CelInput::Fixed {
            value: string(t.clock_text()),
            span: Some(Span::Clock(first, first)),
        };
    }
    CelInput::Partial {
        first: string(clock_text(first)),
        last: string(clock_text(last)),
        span: Span::Clock(first, last),
    }
}

fn timestamp(at: NaiveDateTime) -> cel::Value {
    cel::Value::Timestamp(DateTime::<FixedOffset>::from_naive_utc_and_offset(
        at,
        Utc.fix(),
    ))
}

fn datetime_input(d: &DateParts, t: Option<&TimeParts>) -> CelInput {
    let (first, last) = instant_span(d, t);
    if t.is_some_and(TimeParts::is_complete) {
        return CelInput::Fixed {
            value: timestamp(first),
            span: Some(Span::Calendar(first, first)),
        };
    }
    CelInput::Partial {
        first: timestamp(first),
        last: timestamp(last),
        span: Span::Calendar(first, last),
    }
}

/// The span of a string literal of an expression that reads as a complete date (`YYYY-MM-DD`), a
/// complete date-time or a time (`hh:mm[:ss[.f]]`): a check comparing a partial value with it must
/// not pass when the partial value's span contains it.
pub fn literal_span(s: &str) -> Option<Span> {
    if let Some(d) = parse_date(s).filter(DateParts::is_complete) {
        let day = d.days().0;
        return Some(day_span(day, day));
    }
    if let Some((d, Some(t))) = parse_datetime(s)
        && t.minute.is_some()
    {
        let (first, _) = instant_span(&d, Some(&t));
        return Some(Span::Calendar(first, first));
    }
    parse_time(s).filter(|t| t.minute.is_some()).map(|t| {
        let (first, _) = t.clock_span();
        Span::Clock(first, first)
    })
}
