//! One protocol file, from YAML to a [`Protocol`] ready to validate against: every key checked,
//! every CEL expression compiled once, every problem of the file reported (not only the first).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::file::{CheckFile, FormFile, ProtocolFile};
use super::names::{cel_name, string_literals};
use super::value::literal_span;
use super::{Alert, CONTEXT_VARIABLES, Check, Form, Group, Item, Protocol, Scope};

impl Protocol {
    /// Parses and checks one protocol file; returns every problem found, not only the first.
    pub fn parse(text: &str) -> Result<Protocol, Vec<String>> {
        let file: ProtocolFile = serde_saphyr::from_str(text).map_err(|e| vec![e.to_string()])?;
        Protocol::from_file(file)
    }

    /// Checks and compiles a protocol file; returns every problem found, not only the first.
    pub fn from_file(file: ProtocolFile) -> Result<Protocol, Vec<String>> {
        let mut problems = Vec::new();
        if file.study.trim().is_empty() {
            problems.push("study must not be empty".to_string());
        }
        if let (Some(from), Some(to)) = (file.effective_from, file.effective_to)
            && to < from
        {
            problems.push(format!("effective_to {to} is before effective_from {from}"));
        }
        if file.version.trim().is_empty() {
            problems.push("version must not be empty".to_string());
        }
        if file.sites.is_empty() {
            problems.push("sites must list at least one site".to_string());
        }
        if file.visits.is_empty() {
            problems.push("visits must list at least one visit".to_string());
        }
        let odm = file.odm.unwrap_or_default();
        if let Some(s) = &odm.default_site
            && !file.sites.contains(s)
        {
            problems.push(format!("odm.default_site {s} is not one of sites"));
        }
        if let Some(v) = &odm.default_visit
            && !file.visits.contains(v)
        {
            problems.push(format!("odm.default_visit {v} is not one of visits"));
        }
        let mut forms = BTreeMap::new();
        for (form_name, form) in file.forms {
            let compiled = compile_form(&form_name, form, &mut problems);
            forms.insert(form_name, compiled);
        }
        // Alerts may read the items of any form, and of any group.
        let mut all: Scope = HashMap::new();
        for form in forms.values() {
            for (_, name, cel) in form.cel_mapping() {
                all.entry(cel.to_string())
                    .or_insert_with(|| name.to_string());
            }
        }
        let mut alerts = Vec::new();
        let mut alert_ids = HashSet::new();
        for alert in file.alerts {
            if !alert_ids.insert(alert.id.clone()) {
                problems.push(format!("alert id {} is used twice", alert.id));
            }
            match compile_expression(&alert.when, &all, None) {
                Ok((program, _)) => {
                    let mut reads: Vec<String> = program
                        .references()
                        .variables()
                        .into_iter()
                        .filter(|v| all.contains_key(*v))
                        .map(str::to_string)
                        .collect();
                    reads.sort();
                    alerts.push(Alert {
                        id: alert.id,
                        source: alert.when,
                        program,
                        reads,
                    })
                }
                Err(e) => problems.push(format!("alert {}: {e}", alert.id)),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Protocol {
            study: file.study,
            version: file.version,
            effective_from: file.effective_from,
            effective_to: file.effective_to,
            sites: file.sites.into_iter().collect(),
            visits: file.visits.into_iter().collect(),
            forms,
            alerts,
            odm,
        })
    }
}

fn compile_form(form_name: &str, form: FormFile, problems: &mut Vec<String>) -> Form {
    let FormFile {
        items: mut own,
        groups: group_files,
        checks: form_checks,
        ..
    } = form;
    // One namespace for item and group names; one for their CEL names.
    let mut declared: Vec<(&str, &str)> = own.keys().map(|n| (n.as_str(), "item")).collect();
    for (g, group) in &group_files {
        declared.push((g, "group"));
        declared.extend(group.items.keys().map(|n| (n.as_str(), "item")));
    }
    let mut names: HashMap<&str, &str> = HashMap::new();
    for (name, what) in declared {
        if name.trim().is_empty() {
            problems.push(format!("form {form_name}: a {what} name is empty"));
        }
        if let Some(earlier) = names.insert(name, what) {
            problems.push(format!(
                "form {form_name}: {name} is declared twice ({earlier}, then {what}); \
                 item and group names share one namespace per form"
            ));
        }
    }
    let mut cel_names = BTreeMap::new();
    let mut by_cel: HashMap<String, String> = HashMap::new();
    let all_items = own
        .keys()
        .chain(group_files.values().flat_map(|g| g.items.keys()));
    for name in all_items {
        let cel = cel_name(name);
        if CONTEXT_VARIABLES.contains(&cel.as_str()) {
            problems.push(format!(
                "form {form_name}: item {name} would be read in CEL as the context variable {cel}"
            ));
        }
        if let Some(other) = by_cel.insert(cel.clone(), name.clone())
            && other != *name
        {
            problems.push(format!(
                "form {form_name}: items {other} and {name} have the same CEL name {cel}"
            ));
        }
        cel_names.insert(name.clone(), cel);
    }
    for (name, item) in &mut own {
        lint_item(&format!("form {form_name}, item {name}"), item, problems);
    }
    let scope_of = |items: &BTreeMap<String, Item>| -> Scope {
        items.keys().map(|n| (cel_name(n), n.clone())).collect()
    };
    let form_scope = scope_of(&own);
    let group_of: HashMap<String, String> = group_files
        .iter()
        .flat_map(|(g, grp)| grp.items.keys().map(move |n| (cel_name(n), g.clone())))
        .collect();
    let mut ids = HashSet::new();
    let checks = compile_checks(
        &format!("form {form_name}"),
        form_checks,
        &form_scope,
        Some(&group_of),
        &mut ids,
        problems,
    );
    let mut groups = BTreeMap::new();
    for (g, group) in group_files {
        let mut items = group.items;
        for (name, item) in &mut items {
            lint_item(
                &format!("form {form_name}, group {g}, item {name}"),
                item,
                problems,
            );
        }
        let mut scope = form_scope.clone();
        scope.extend(scope_of(&items));
        let checks = compile_checks(
            &format!("form {form_name}, group {g}"),
            group.checks,
            &scope,
            Some(&group_of),
            &mut ids,
            problems,
        );
        groups.insert(
            g,
            Group {
                label: group.label,
                items,
                checks,
            },
        );
    }
    let has_partial = own
        .values()
        .chain(groups.values().flat_map(|g| g.items.values()))
        .any(|i| i.kind.is_partial());
    Form {
        items: own,
        groups,
        checks,
        cel_names,
        by_cel,
        has_partial,
    }
}

fn lint_item(place: &str, item: &mut Item, problems: &mut Vec<String>) {
    problems.extend(item.lint().into_iter().map(|p| format!("{place}: {p}")));
}

fn compile_checks(
    place: &str,
    files: Vec<CheckFile>,
    scope: &Scope,
    groups: Option<&HashMap<String, String>>,
    ids: &mut HashSet<String>,
    problems: &mut Vec<String>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for check in files {
        if !ids.insert(check.id.clone()) {
            problems.push(format!("{place}: check id {} is used twice", check.id));
        }
        match compile_expression(&check.assert, scope, groups) {
            Ok((program, items)) => {
                let literals = string_literals(&program)
                    .iter()
                    .filter_map(|s| literal_span(s))
                    .collect();
                checks.push(Check {
                    id: check.id,
                    message: check.message,
                    source: check.assert,
                    program,
                    items,
                    hard: check.hard,
                    when_missing: check.when_missing,
                    literals,
                })
            }
            Err(e) => problems.push(format!("{place}, check {}: {e}", check.id)),
        }
    }
    checks
}

/// Compiles a CEL expression and checks that it reads only the items of `scope` (by their CEL
/// names) and the context variables. Returns the program and the names of the items it reads,
/// sorted. `groups` (CEL name -> group) explains a name that belongs to a group out of scope.
pub fn compile_expression(
    source: &str,
    scope: &Scope,
    groups: Option<&HashMap<String, String>>,
) -> Result<(cel::Program, Vec<String>), String> {
    let program = cel::Program::compile(source)
        .map_err(|e| format!("`{source}` is not a valid CEL expression: {e}"))?;
    let mut used = Vec::new();
    let references = program.references();
    let mut variables: Vec<&str> = references.variables();
    variables.sort();
    for var in variables {
        if let Some(name) = scope.get(var) {
            used.push(name.clone());
        } else if let Some(g) = groups.and_then(|g| g.get(var)) {
            return Err(format!(
                "`{source}` reads `{var}`, an item of group {g}: only that group's checks can read it"
            ));
        } else if !CONTEXT_VARIABLES.contains(&var) {
            let hint = if scope.iter().any(|(cel, name)| cel != name) {
                " (an item whose name is not a CEL identifier is read under its CEL name: \
                 `check-config --cel-names FORM` lists them)"
            } else {
                ""
            };
            return Err(format!(
                "`{source}` reads `{var}`, which is neither an item of the form nor one of {}{hint}",
                CONTEXT_VARIABLES.join(", ")
            ));
        }
    }
    used.sort();
    Ok((program, used))
}
