//! The reading of RangeChecks: comparators, check values as values of the item, whether
//! conditions can all hold (on test points, see the module above), CEL literals.

use std::cmp::Ordering;

use crate::protocol::value::{from_text, number::parse_decimal};
use crate::protocol::{Item, ItemType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    In,
    Ni,
}

impl Op {
    pub(super) fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "LT" => Op::Lt,
            "LE" => Op::Le,
            "GT" => Op::Gt,
            "GE" => Op::Ge,
            "EQ" => Op::Eq,
            "NE" => Op::Ne,
            "IN" => Op::In,
            "NI" => Op::Ni,
            _ => return None,
        })
    }

    pub(super) fn negated(self) -> Op {
        match self {
            Op::Lt => Op::Ge,
            Op::Le => Op::Gt,
            Op::Gt => Op::Le,
            Op::Ge => Op::Lt,
            Op::Eq => Op::Ne,
            Op::Ne => Op::Eq,
            Op::In => Op::Ni,
            Op::Ni => Op::In,
        }
    }

    pub(super) fn ordering(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }

    pub(super) fn cel(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::In | Op::Ni => "in",
        }
    }

    pub(super) fn words(self) -> &'static str {
        match self {
            Op::Lt => "less than",
            Op::Le => "at most",
            Op::Gt => "more than",
            Op::Ge => "at least",
            Op::Eq => "equal to",
            Op::Ne => "other than",
            Op::In => "one of",
            Op::Ni => "none of",
        }
    }
}

/// A check value read as a value of the item's type.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Val {
    Num(f64),
    Str(String),
    Bool(bool),
}

/// One RangeCheck, read.
#[derive(Clone, Debug)]
pub(super) struct Cond {
    /// Its number among the item's RangeChecks, from 1.
    pub(super) n: usize,
    pub(super) op: Op,
    pub(super) values: Vec<Val>,
    pub(super) hard: bool,
    pub(super) message: Option<String>,
}

/// How values of the item compare.
pub(super) struct Sem<'a> {
    pub(super) item: &'a Item,
    /// Codes of a numeric code type compare as numbers.
    pub(super) numeric_codes: bool,
}

impl Sem<'_> {
    pub(super) fn kind(&self) -> ItemType {
        self.item.kind
    }

    /// A check value as a value of the item, or None when it is not one.
    pub(super) fn parse(&self, text: &str) -> Option<Val> {
        let t = text.trim();
        match self.kind() {
            ItemType::Integer | ItemType::Decimal => parse_decimal(t).map(Val::Num),
            ItemType::Boolean => match t {
                "1" | "true" => Some(Val::Bool(true)),
                "0" | "false" => Some(Val::Bool(false)),
                _ => None,
            },
            ItemType::Text => Some(Val::Str(t.to_string())),
            ItemType::Code | ItemType::Date | ItemType::PartialDate | ItemType::PartialTime => {
                from_text(self.item, t)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .map(Val::Str)
            }
            // CEL reads a time as 'hh:mm:ss[.f]' without its offset: one with an offset is not
            // comparable so.
            ItemType::Time => from_text(self.item, t)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .filter(|s| !s[s.len().min(8)..].contains(['Z', '+', '-']))
                .map(Val::Str),
            ItemType::Datetime | ItemType::PartialDatetime | ItemType::Binary => None,
        }
    }

    pub(super) fn cmp(&self, a: &Val, b: &Val) -> Option<Ordering> {
        match (a, b) {
            (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
            (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
            (Val::Str(x), Val::Str(y)) if self.numeric_codes => {
                parse_decimal(x)?.partial_cmp(&parse_decimal(y)?)
            }
            (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
            _ => None,
        }
    }

    pub(super) fn holds(&self, c: &Cond, x: &Val) -> bool {
        let first = &c.values[0];
        let o = self.cmp(x, first);
        match c.op {
            Op::Lt => o == Some(Ordering::Less),
            Op::Le => matches!(o, Some(Ordering::Less | Ordering::Equal)),
            Op::Gt => o == Some(Ordering::Greater),
            Op::Ge => matches!(o, Some(Ordering::Greater | Ordering::Equal)),
            Op::Eq => o == Some(Ordering::Equal),
            Op::Ne => o != Some(Ordering::Equal),
            Op::In => c
                .values
                .iter()
                .any(|v| self.cmp(x, v) == Some(Ordering::Equal)),
            Op::Ni => !c
                .values
                .iter()
                .any(|v| self.cmp(x, v) == Some(Ordering::Equal)),
        }
    }

    /// Test points: one in each piece the check values cut the item's values into.
    pub(super) fn candidates(&self, conds: &[Cond]) -> Vec<Val> {
        if self.kind() == ItemType::Boolean {
            return vec![Val::Bool(false), Val::Bool(true)];
        }
        if let (ItemType::Code, Some(codes)) = (self.kind(), &self.item.codes) {
            return codes.codes().map(|c| Val::Str(c.to_string())).collect();
        }
        let values = conds.iter().flat_map(|c| c.values.iter());
        match self.kind() {
            ItemType::Integer | ItemType::Decimal => {
                let mut xs: Vec<f64> = values
                    .filter_map(|v| match v {
                        Val::Num(x) => Some(*x),
                        _ => None,
                    })
                    .collect();
                xs.sort_by(f64::total_cmp);
                xs.dedup();
                let mut out = Vec::new();
                if self.kind() == ItemType::Integer {
                    for x in &xs {
                        for p in [x.floor() - 1.0, x.floor(), x.ceil(), x.ceil() + 1.0] {
                            out.push(Val::Num(p));
                        }
                    }
                } else {
                    for (i, x) in xs.iter().enumerate() {
                        out.push(Val::Num(*x));
                        if let Some(next) = xs.get(i + 1) {
                            out.push(Val::Num(x + (next - x) / 2.0));
                        }
                    }
                    if let (Some(lo), Some(hi)) = (xs.first(), xs.last()) {
                        out.push(Val::Num(lo - 1.0));
                        out.push(Val::Num(hi + 1.0));
                    }
                }
                out
            }
            _ => {
                let mut out = vec![Val::Str(String::new())];
                for v in values {
                    if let Val::Str(s) = v {
                        out.push(Val::Str(s.clone()));
                        out.push(Val::Str(format!("{s}\u{10FFFF}")));
                    }
                }
                out
            }
        }
    }

    pub(super) fn feasible(&self, conds: &[Cond]) -> bool {
        self.candidates(conds)
            .iter()
            .any(|x| conds.iter().all(|c| self.holds(c, x)))
    }

    /// A CEL literal of a check value.
    pub(super) fn literal(&self, v: &Val) -> Option<String> {
        Some(match v {
            Val::Num(x) if self.kind() == ItemType::Integer => {
                if x.fract() != 0.0 || x.abs() > 9_007_199_254_740_992.0 {
                    return None;
                }
                format!("{}", *x as i64)
            }
            Val::Num(x) => format!("{x:?}"),
            Val::Bool(b) => b.to_string(),
            Val::Str(s) => cel_string(s),
        })
    }
}

/// A CEL string literal: single quotes, backslash escapes for quotes, backslashes and controls.
pub(in crate::tools::study_odm) fn cel_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}
