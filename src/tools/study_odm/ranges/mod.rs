//! An ItemDef's RangeChecks -> the protocol's `range` (Soft), `hard_range` (Hard) and CEL checks.
//!
//! ODM 1.3.2 says a RangeCheck is the condition valid data satisfies. Real files (CDISC's
//! Connect-A-Thon example, the SAS sample) write the failing condition instead (`LT 1` and `GT 3`
//! with "must be between 1 and 3"). The specification is followed; when an item's checks, taken
//! as valid conditions, cannot all hold (no value satisfies them all), they are taken as failing
//! conditions instead, and a `note:` says so for a person to review.
//!
//! Whether conditions can all hold is decided exactly on test points: the conditions are constant
//! between consecutive check values, so one point of each piece (the values, points beside them,
//! one beyond each end) tells; for a code item the domain is its codes, for a boolean both values.
//!
//! Mapping: on numbers, GE/LE become bounds of `range` / `hard_range` (a missing side is infinite);
//! GT/LT too on integers (`LT 180` is `<= 179`), a CEL check on decimals. EQ, NE, IN, NI and every
//! comparison on other types become CEL checks (`hard` from SoftHard, the ErrorMessage as message).
//! Not converted, and listed: FormalExpressions, comparators ODM does not define, check values not
//! of the item's type, comparisons of date-times, and checks stated in a unit when the item
//! accepts several (the protocol's ranges do not depend on the unit).

mod logic;

use crate::odm::metadata::{ItemDef, RangeCheck};
use crate::protocol::file::CheckFile;
use crate::protocol::value::number::parse_decimal;
use crate::protocol::{CodeType, Item, ItemType, cel_name};

use super::report::{Kind, Report, shown};
#[cfg(test)]
pub(super) use logic::cel_string;
use logic::{Cond, Op, Sem, Val};

/// What the range checks of one item came to.
#[derive(Default)]
pub(super) struct Ranges {
    pub checks: Vec<CheckFile>,
    /// Read as failing conditions (against the specification).
    pub flipped: bool,
    /// RangeChecks converted (into a range, a hard range or a check).
    pub converted: usize,
}

/// Converts the RangeChecks of `def` onto `item` (its type, codes and units decided already).
pub(super) fn convert(def: &ItemDef, item: &mut Item, report: &mut Report) -> Ranges {
    let mut out = Ranges::default();
    if def.range_checks.is_empty() {
        return out;
    }
    let name = shown(&def.oid);
    let numeric_codes = item.kind == ItemType::Code
        && matches!(item.code_type, Some(CodeType::Integer | CodeType::Decimal));
    let sem = Sem {
        item: &*item,
        numeric_codes,
    };
    let mut conds = Vec::new();
    for (i, rc) in def.range_checks.iter().enumerate() {
        let n = i + 1;
        match read(&sem, def, rc, n) {
            Ok(c) => conds.push(c),
            Err(why) => report.not_converted(format!("item {name}: RangeCheck {n} {why}")),
        }
    }
    if conds.is_empty() {
        return out;
    }
    if !sem.feasible(&conds) {
        let negated: Vec<Cond> = conds
            .iter()
            .map(|c| Cond {
                op: c.op.negated(),
                ..c.clone()
            })
            .collect();
        if !sem.feasible(&negated) {
            report.not_converted(format!(
                "item {name}: its range checks cannot all hold, read as the conditions valid data \
                 meets or as those it fails: none converted"
            ));
            return out;
        }
        report.note(format!(
            "item {name}: its range checks cannot all hold as the conditions valid data meets \
             (ODM 1.3.2); read as the conditions data fails instead: review them"
        ));
        out.flipped = true;
        conds = negated;
    }
    let oid = def.oid.clone();
    let kind = sem.kind();
    let mut bounds = [Bounds::default(), Bounds::default()];
    for c in conds {
        let as_bound = c.op.ordering()
            && (kind == ItemType::Integer
                || (kind == ItemType::Decimal && matches!(c.op, Op::Ge | Op::Le)));
        if as_bound {
            let Val::Num(v) = c.values[0] else { continue };
            bounds[usize::from(c.hard)].add(c.op, v, kind == ItemType::Integer);
            if c.message.is_some() {
                report.group(
                    Kind::Note,
                    "the messages of range checks made range or hard_range are not kept (the \
                     protocol words its own)",
                    shown(&oid),
                );
            }
            out.converted += 1;
            continue;
        }
        let sem = Sem {
            item: &*item,
            numeric_codes,
        };
        match check(&sem, &oid, &c) {
            Some(check) => {
                out.checks.push(check);
                out.converted += 1;
            }
            None => report.not_converted(format!(
                "item {}: RangeCheck {}: a check value cannot be written for a {} item",
                shown(&oid),
                c.n,
                type_name(kind)
            )),
        }
    }
    item.range = bounds[0].range();
    item.hard_range = bounds[1].range();
    out
}

/// Lower and upper bounds of one severity.
#[derive(Default)]
struct Bounds {
    lo: Option<f64>,
    hi: Option<f64>,
}

impl Bounds {
    fn add(&mut self, op: Op, v: f64, integer: bool) {
        let (lo, hi) = match (op, integer) {
            (Op::Ge, true) => (Some(v.ceil()), None),
            (Op::Gt, true) => (Some(v.floor() + 1.0), None),
            (Op::Le, true) => (None, Some(v.floor())),
            (Op::Lt, true) => (None, Some(v.ceil() - 1.0)),
            (Op::Ge | Op::Gt, false) => (Some(v), None),
            _ => (None, Some(v)),
        };
        if let Some(lo) = lo {
            self.lo = Some(self.lo.map_or(lo, |l| l.max(lo)));
        }
        if let Some(hi) = hi {
            self.hi = Some(self.hi.map_or(hi, |h| h.min(hi)));
        }
    }

    fn range(&self) -> Option<[f64; 2]> {
        if self.lo.is_none() && self.hi.is_none() {
            return None;
        }
        Some([
            self.lo.unwrap_or(f64::NEG_INFINITY),
            self.hi.unwrap_or(f64::INFINITY),
        ])
    }
}

/// One RangeCheck read, or why it is not converted.
fn read(sem: &Sem<'_>, def: &ItemDef, rc: &RangeCheck, n: usize) -> Result<Cond, String> {
    if rc.formal_expression {
        return Err("is a FormalExpression".into());
    }
    let op = rc
        .comparator
        .as_deref()
        .and_then(Op::parse)
        .ok_or("has no Comparator ODM defines")?;
    let kind = sem.kind();
    if matches!(
        kind,
        ItemType::Datetime | ItemType::PartialDatetime | ItemType::Binary
    ) {
        return Err(format!(
            "compares a {} item: not converted",
            type_name(kind)
        ));
    }
    if op.ordering() && kind == ItemType::Boolean {
        return Err("orders a boolean item".into());
    }
    if rc.values.is_empty() {
        return Err("has no CheckValue".into());
    }
    if !matches!(op, Op::In | Op::Ni) && rc.values.len() > 1 {
        return Err("has several CheckValues for a comparator that takes one".into());
    }
    if let Some(unit) = &rc.unit {
        let units = distinct(&def.units);
        if !units.is_empty() && !units.contains(&unit.as_str()) {
            return Err(format!(
                "is stated in unit {}, which is not one of the item's units",
                shown(unit)
            ));
        }
        if units.len() > 1 {
            return Err(format!(
                "applies to values in unit {} only: the protocol's ranges and checks do not \
                 depend on the unit",
                shown(unit)
            ));
        }
    }
    let mut values = Vec::new();
    for v in &rc.values {
        values.push(sem.parse(v).ok_or_else(|| {
            format!(
                "has a CheckValue that is not of the item's type ({})",
                type_name(kind)
            )
        })?);
    }
    let hard = rc.soft_hard.as_deref() == Some("Hard");
    Ok(Cond {
        n,
        op,
        values,
        hard,
        message: rc.message.best(),
    })
}

/// The CEL check of one condition, or None when a value cannot be written as a literal.
fn check(sem: &Sem<'_>, oid: &str, c: &Cond) -> Option<CheckFile> {
    let var = cel_name(oid);
    let literals: Option<Vec<String>> = c.values.iter().map(|v| sem.literal(v)).collect();
    let literals = literals?;
    let assert = match c.op {
        Op::In => format!("{var} in [{}]", literals.join(", ")),
        Op::Ni => format!("!({var} in [{}])", literals.join(", ")),
        op if op.ordering() && sem.numeric_codes => {
            let Val::Str(s) = &c.values[0] else {
                return None;
            };
            format!("double({var}) {} {:?}", op.cel(), parse_decimal(s)?)
        }
        op => format!("{var} {} {}", op.cel(), literals[0]),
    };
    let message = c.message.clone().unwrap_or_else(|| {
        let shown_values: Vec<String> = c
            .values
            .iter()
            .map(|v| match v {
                Val::Num(x) => format!("{x}"),
                Val::Str(s) => s.clone(),
                Val::Bool(b) => b.to_string(),
            })
            .collect();
        format!("{oid} must be {} {}", c.op.words(), shown_values.join(", "))
    });
    Some(CheckFile {
        id: format!("{oid}.RC{}", c.n),
        assert,
        message,
        hard: c.hard,
        when_missing: Default::default(),
    })
}

/// The distinct unit OIDs, in order.
pub(super) fn distinct(units: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for u in units {
        if !out.contains(&u.as_str()) {
            out.push(u);
        }
    }
    out
}

pub(super) fn type_name(kind: ItemType) -> &'static str {
    match kind {
        ItemType::Integer => "integer",
        ItemType::Decimal => "decimal",
        ItemType::Text => "text",
        ItemType::Date => "date",
        ItemType::Code => "code",
        ItemType::Boolean => "boolean",
        ItemType::Time => "time",
        ItemType::Datetime => "datetime",
        ItemType::PartialDate => "partial_date",
        ItemType::PartialTime => "partial_time",
        ItemType::PartialDatetime => "partial_datetime",
        ItemType::Binary => "binary",
    }
}
