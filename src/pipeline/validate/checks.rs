//! Edit checks and alerts: CEL over a record's canonical values.
//!
//! - **Missing values.** A check that reads an item the record lacks (absent or null) is not
//!   applicable and is skipped, unless it says `when_missing: query`: then it raises a data query
//!   naming the missing items. (A missing `required` item has its own query either way.)
//! - **Partial values.** A check that reads a truncated partial date, time or date-time is
//!   evaluated with each such value at its first and at its last corner, every combination (at most
//!   16: more than 4 partial values cannot be decided). It passes only if every combination passes
//!   and fails only if every one fails. It cannot be decided, and raises a data query saying why,
//!   when the answers differ, or when a partial value's span overlaps another date or time the
//!   check reads (an item, or a literal such as `'2024-03-10'`): `AESTDAT != AEENDAT` with
//!   `2024-03` and `2024-03-15` is true at both corners, yet unknown. It never passes silently.
//! - **Hard checks** (`hard: true`) refuse the record when they fail; one that cannot be decided
//!   or evaluated raises a data query like any check.
//! - **Groups.** A group's checks run once per row, over the row's items and the form's items.
//! - **Alerts** are raised when their expression is true: at any corner of the partial values
//!   they read (an alert errs on the side of raising; past 4 partial values, at the all-first and
//!   all-last corners), for the form's items or for any row of a group (an alert reading a group's
//!   items fires if any row matches). One that reads an item the record lacks is not raised.

use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use super::items::{Row, RowLabel};
use super::{Finding, RecordContext, RejectKind, Rejected};
use crate::protocol::value::{CelInput, Span};
use crate::protocol::{Check, Form, Group, Item, Protocol, WhenMissing};

/// The most partial values a check may read and still be decided: 2^4 = 16 evaluations.
const MAX_PARTIALS: usize = 4;

fn cel_env() -> Arc<cel::Env> {
    static ENV: OnceLock<Arc<cel::Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(cel::Env::stdlib())).clone()
}

/// A group's validated rows: (group name, its definition, (repeat key, row) in order).
pub type Rows<'a> = Vec<(&'a str, &'a Group, Vec<Row>)>;

/// Runs the form's and its groups' checks and the protocol's alerts: findings are pushed, a failing
/// hard check refuses the record. Returns the ids of the alerts raised.
pub fn run(
    protocol: &Protocol,
    form: &Form,
    context: RecordContext<'_>,
    items: &Map<String, Value>,
    groups: &Rows<'_>,
    findings: &mut Vec<Finding>,
) -> Result<Vec<String>, Rejected> {
    let has_group_checks = groups
        .iter()
        .any(|(_, g, rows)| !g.checks.is_empty() && !rows.is_empty());
    if form.checks.is_empty() && protocol.alerts.is_empty() && !has_group_checks {
        return Ok(Vec::new());
    }
    let mut ctx = cel::Context::with_env(cel_env());
    add_values(&mut ctx, form, &form.items, items);
    for (var, value) in [
        ("study", context.study),
        ("site", context.site),
        ("visit", context.visit),
        ("form", context.form),
    ] {
        ctx.add_variable_from_value(var, cel::Value::String(Arc::new(value.to_string())));
    }
    let form_scope = Scope {
        form,
        items,
        row: None,
    };
    for check in &form.checks {
        run_check(check, &form_scope, &ctx, None, findings)?;
    }
    let mut raised: Vec<String> = Vec::new();
    for alert in &protocol.alerts {
        if alert_fires(&alert.program, &alert.reads, &form_scope, &ctx) {
            raised.push(alert.id.clone());
        }
    }
    for (name, group, rows) in groups {
        let reads_group = |reads: &[String]| {
            group.items.keys().any(|i| {
                form.cel_name(i)
                    .is_some_and(|c| reads.iter().any(|r| r == c))
            })
        };
        for (position, (key, row)) in rows.iter().enumerate() {
            let mut row_ctx = ctx.new_inner_scope();
            add_values(&mut row_ctx, form, &group.items, row);
            let scope = Scope {
                form,
                items,
                row: Some((group, row)),
            };
            let label = RowLabel::new(name, key, position + 1);
            for check in &group.checks {
                run_check(check, &scope, &row_ctx, Some(&label), findings)?;
            }
            for alert in &protocol.alerts {
                if !raised.contains(&alert.id)
                    && reads_group(&alert.reads)
                    && alert_fires(&alert.program, &alert.reads, &scope, &row_ctx)
                {
                    raised.push(alert.id.clone());
                }
            }
        }
    }
    // Alerts in the protocol's order, whichever row raised them.
    Ok(protocol
        .alerts
        .iter()
        .filter(|a| raised.contains(&a.id))
        .map(|a| a.id.clone())
        .collect())
}

/// The values a check can see: the form's items, and a row's when it runs for a row.
struct Scope<'a> {
    form: &'a Form,
    items: &'a Map<String, Value>,
    row: Option<(&'a Group, &'a Map<String, Value>)>,
}

impl Scope<'_> {
    /// An item's definition and value (`None` for the value when absent or null).
    fn get(&self, name: &str) -> Option<(&Item, Option<&Value>)> {
        fn present(v: Option<&Value>) -> Option<&Value> {
            v.filter(|v| !v.is_null())
        }
        if let Some((group, row)) = self.row
            && let Some(def) = group.items.get(name)
        {
            return Some((def, present(row.get(name))));
        }
        let def = self.form.items.get(name)?;
        Some((def, present(self.items.get(name))))
    }
}

/// Adds the values of `items` that are not truncated partial values (those are given per corner).
fn add_values(
    ctx: &mut cel::Context<'_, '_>,
    form: &Form,
    defs: &std::collections::BTreeMap<String, Item>,
    items: &Map<String, Value>,
) {
    for (name, value) in items {
        let (Some(def), Some(cel)) = (defs.get(name), form.cel_name(name)) else {
            continue;
        };
        if let Some(v) = CelInput::fixed_value(def, value) {
            ctx.add_variable_from_value(cel.to_string(), v);
        }
    }
}

/// How a check came out.
enum Verdict {
    Pass,
    Fail,
    Undecidable(String),
    Error,
}

fn run_check(
    check: &Check,
    scope: &Scope<'_>,
    ctx: &cel::Context<'_, '_>,
    row: Option<&RowLabel>,
    findings: &mut Vec<Finding>,
) -> Result<(), Rejected> {
    let prefix = row.map(|r| format!("{}: ", r.shown)).unwrap_or_default();
    let mut finding = |message: String| {
        findings.push(Finding {
            check: check.id.clone(),
            message: format!("{prefix}{message}"),
            row: row.map(RowLabel::row_ref),
        })
    };
    let mut missing = Vec::new();
    let mut present = Vec::with_capacity(check.items.len());
    for name in &check.items {
        match scope.get(name) {
            Some((def, Some(v))) => present.push((name.as_str(), def, v)),
            _ => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        if check.when_missing == WhenMissing::Query {
            finding(format!(
                "check {} could not be evaluated: {} {} missing; please review: {}",
                check.id,
                missing.join(", "),
                if missing.len() == 1 { "is" } else { "are" },
                check.message
            ));
        }
        return Ok(());
    }
    // Only a partial value needs corners and spans: any other check is evaluated once, as is.
    let verdict = if present.iter().any(|(_, def, _)| def.kind.is_partial()) {
        let reads: Vec<(&str, CelInput)> = present
            .iter()
            .map(|(name, def, v)| (*name, CelInput::of(def, v)))
            .collect();
        decide(check, scope.form, &reads, ctx)
    } else {
        match check.program.execute(ctx) {
            Ok(cel::Value::Bool(true)) => Verdict::Pass,
            Ok(cel::Value::Bool(false)) => Verdict::Fail,
            _ => Verdict::Error,
        }
    };
    match verdict {
        Verdict::Pass => {}
        Verdict::Fail if check.hard => {
            let at = row.map(|r| format!(" for {}", r.shown)).unwrap_or_default();
            return Err(Rejected::new(
                RejectKind::Invalid,
                format!("check {} failed{at}: {}", check.id, check.message),
            ));
        }
        Verdict::Fail => finding(check.message.clone()),
        Verdict::Undecidable(why) => finding(format!(
            "check {} could not be decided: {why}; please review: {}",
            check.id, check.message
        )),
        Verdict::Error => finding(format!(
            "check could not be evaluated (expression `{}`); please review: {}",
            check.source, check.message
        )),
    }
    Ok(())
}

fn decide(
    check: &Check,
    form: &Form,
    reads: &[(&str, CelInput)],
    ctx: &cel::Context<'_, '_>,
) -> Verdict {
    let partials: Vec<(&str, &cel::Value, &cel::Value, Span)> = reads
        .iter()
        .filter_map(|(name, input)| match input {
            CelInput::Partial { first, last, span } => Some((*name, first, last, *span)),
            CelInput::Fixed { .. } => None,
        })
        .collect();
    for (name, _, _, span) in &partials {
        for (other, input) in reads {
            if other != name && input.span().is_some_and(|s| s.overlaps(span)) {
                return Verdict::Undecidable(format!(
                    "{name} is a partial value whose span overlaps {other}"
                ));
            }
        }
        if check.literals.iter().any(|l| l.overlaps(span)) {
            return Verdict::Undecidable(format!(
                "{name} is a partial value whose span holds a date or time the check compares it with"
            ));
        }
    }
    if partials.len() > MAX_PARTIALS {
        return Verdict::Undecidable(format!(
            "it reads {} partial values, more than {MAX_PARTIALS}",
            partials.len()
        ));
    }
    let answers = corners(
        &check.program,
        form,
        &partials,
        ctx,
        0..1u32 << partials.len(),
    );
    let names: Vec<&str> = partials.iter().map(|p| p.0).collect();
    verdict_of(&answers, &names)
}

/// The verdict of a check's answers at its corners (`partials`: the partial values it read).
fn verdict_of(answers: &[Option<bool>], partials: &[&str]) -> Verdict {
    if answers.iter().any(Option::is_none) {
        Verdict::Error
    } else if answers.iter().all(|a| *a == Some(true)) {
        Verdict::Pass
    } else if answers.iter().all(|a| *a == Some(false)) {
        Verdict::Fail
    } else {
        Verdict::Undecidable(format!(
            "the answer depends on the unknown part of {}",
            partials.join(", ")
        ))
    }
}

/// Evaluates `program` with the partial values at the corners `masks` say (bit i set: the i-th
/// partial value at its last corner). `Some(bool)` per evaluation, `None` for an error or a result
/// that is not a bool.
fn corners(
    program: &cel::Program,
    form: &Form,
    partials: &[(&str, &cel::Value, &cel::Value, Span)],
    ctx: &cel::Context<'_, '_>,
    masks: impl Iterator<Item = u32>,
) -> Vec<Option<bool>> {
    let eval = |c: &cel::Context<'_, '_>| match program.execute(c) {
        Ok(cel::Value::Bool(b)) => Some(b),
        _ => None,
    };
    if partials.is_empty() {
        return vec![eval(ctx)];
    }
    masks
        .map(|mask| {
            let mut inner = ctx.new_inner_scope();
            for (i, (name, first, last, _)) in partials.iter().enumerate() {
                let value = if mask & (1 << i) == 0 { first } else { last };
                let cel = form.cel_name(name).unwrap_or(name);
                inner.add_variable_from_value(cel.to_string(), (*value).clone());
            }
            eval(&inner)
        })
        .collect()
}

/// Whether an alert is true for `scope` at any corner of the partial values it reads.
fn alert_fires(
    program: &cel::Program,
    reads: &[String],
    scope: &Scope<'_>,
    ctx: &cel::Context<'_, '_>,
) -> bool {
    if !scope.form.has_partial_items() {
        return matches!(program.execute(ctx), Ok(cel::Value::Bool(true)));
    }
    let mut inputs = Vec::new();
    for cel in reads {
        if let Some(name) = scope.form.item_of_cel(cel)
            && let Some((def, Some(v))) = scope.get(name)
            && def.kind.is_partial()
            && let CelInput::Partial { first, last, span } = CelInput::of(def, v)
        {
            inputs.push((name, first, last, span));
        }
    }
    let partials: Vec<(&str, &cel::Value, &cel::Value, Span)> =
        inputs.iter().map(|(n, f, l, s)| (*n, f, l, *s)).collect();
    let all = (1u32 << partials.len().min(31)) - 1;
    let masks: Vec<u32> = if partials.len() <= MAX_PARTIALS {
        (0..=all).collect()
    } else {
        vec![0, all]
    };
    corners(program, scope.form, &partials, ctx, masks.into_iter()).contains(&Some(true))
}
