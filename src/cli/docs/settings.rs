//! The configuration half of the documentation test: `config/default.yaml` against the settings
//! of the code, and the configuration reference of `docs/operators.md` against both.

use std::collections::{BTreeMap, BTreeSet};

use edc_ingest::config::{DEFAULT_YAML, Settings};
use serde_json::{Value, json};

use super::markdown::{cell_code, code, lines};
use super::{OPERATORS, documents, fail_on, operators_section};

/// The leaves of `config/default.yaml` by dotted key, and its sections (mappings; "" the top).
pub(super) fn defaults() -> (BTreeMap<String, Value>, BTreeMap<String, BTreeSet<String>>) {
    fn walk(
        prefix: &str,
        map: &serde_json::Map<String, Value>,
        leaves: &mut BTreeMap<String, Value>,
        sections: &mut BTreeMap<String, BTreeSet<String>>,
    ) {
        sections.insert(prefix.to_string(), map.keys().cloned().collect());
        for (k, v) in map {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Object(inner) => walk(&key, inner, leaves, sections),
                _ => {
                    leaves.insert(key, v.clone());
                }
            }
        }
    }
    let yaml: Value = serde_saphyr::from_str(DEFAULT_YAML).expect("config/default.yaml parses");
    let (mut leaves, mut sections) = (BTreeMap::new(), BTreeMap::new());
    walk(
        "",
        yaml.as_object().expect("a mapping"),
        &mut leaves,
        &mut sections,
    );
    (leaves, sections)
}

/// The fields `Settings` has at `section` (dotted; "" the top), as its own error names them: every
/// struct of the settings denies unknown fields, and serde's refusal lists the fields expected.
pub(super) fn settings_fields(section: &str) -> BTreeSet<String> {
    let mut probe = json!({"__probe__": 0});
    for part in section.split('.').filter(|p| !p.is_empty()).rev() {
        probe = json!({ part: probe });
    }
    let error = match serde_json::from_value::<Settings>(probe) {
        Ok(_) => panic!("the settings at `{section}` accepted an unknown key"),
        Err(e) => e.to_string(),
    };
    let (_, expected) = error
        .split_once("expected")
        .unwrap_or_else(|| panic!("`{section}`: not an unknown-field error: {error}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// A default as the reference writes it: the YAML value, strings bare, empty as `""`.
pub(super) fn shown(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::String(s) if s.is_empty() => "\"\"".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(shown).collect::<Vec<_>>().join(", ")
            )
        }
        other => other.to_string(),
    }
}

#[test]
fn the_defaults_load_and_name_every_field_of_the_settings() {
    if let Err(e) = Settings::load_with_env(None, Vec::<(String, String)>::new()) {
        panic!("config/default.yaml does not load into the settings: {e}");
    }
    let (_, sections) = defaults();
    let mut problems = Vec::new();
    for (section, keys) in &sections {
        let fields = settings_fields(section);
        let at = |k: &str| {
            if section.is_empty() {
                k.to_string()
            } else {
                format!("{section}.{k}")
            }
        };
        for f in fields.difference(keys) {
            problems.push(format!(
                "`{}` is a setting of the code but not in config/default.yaml",
                at(f)
            ));
        }
        for k in keys.difference(&fields) {
            problems.push(format!(
                "`{}` is in config/default.yaml but no setting of the code",
                at(k)
            ));
        }
    }
    fail_on(problems, "config/default.yaml against config::Settings");
}

#[test]
fn the_configuration_reference_names_every_key_with_its_default() {
    let docs = documents();
    let (leaves, _) = defaults();
    let mut documented = BTreeMap::new();
    let mut problems = Vec::new();
    for (line, cells) in operators_section(&docs, "Configuration reference") {
        let (Some(key), Some(default)) = (cell_code(&cells[0]), cells.get(1)) else {
            problems.push(format!(
                "{OPERATORS}:{line}: a row of the configuration reference that names no `key`"
            ));
            continue;
        };
        if documented.insert(key.to_string(), line).is_some() {
            problems.push(format!("{OPERATORS}:{line}: `{key}` is documented twice"));
        }
        match leaves.get(key) {
            None => problems.push(format!(
                "{OPERATORS}:{line}: `{key}` is documented but is no configuration key (config/default.yaml)"
            )),
            Some(value) if cell_code(default) != Some(shown(value).as_str()) => {
                problems.push(format!(
                    "{OPERATORS}:{line}: `{key}`: documented default {default}, config/default.yaml says `{}`",
                    shown(value)
                ))
            }
            Some(_) => {}
        }
    }
    for key in leaves.keys().filter(|k| !documented.contains_key(*k)) {
        problems.push(format!(
            "`{key}` (config/default.yaml) is not in the configuration reference of {OPERATORS}"
        ));
    }
    fail_on(problems, "the configuration reference");
}

#[test]
fn every_configuration_key_named_in_the_documentation_exists() {
    let (leaves, sections) = defaults();
    let known = |key: &str| leaves.contains_key(key) || sections.contains_key(key);
    let top: BTreeSet<&str> = sections
        .keys()
        .filter_map(|s| s.split('.').next())
        .collect();
    let files = [
        ".rs", ".md", ".yaml", ".yml", ".sh", ".sql", ".json", ".toml", ".xml", ".py",
    ];
    let mut problems = Vec::new();
    for (path, text) in documents() {
        for (line, piece) in code(&lines(&text)) {
            let words = piece.split(|c: char| c.is_whitespace() || c == '=' || c == '"');
            for word in std::iter::once(piece).chain(words) {
                let dotted = word.split('.').count() > 1
                    && word
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
                    && top.contains(word.split('.').next().unwrap_or(""))
                    && !files.iter().any(|f| word.ends_with(f));
                // EDC__SECTION__KEY is the pattern itself.
                let env = word.strip_prefix("EDC__").filter(|w| {
                    *w != "SECTION__KEY"
                        && !w.is_empty()
                        && w.chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                });
                let key = match env {
                    Some(rest) => rest.to_lowercase().replace("__", "."),
                    None if dotted && word == piece => word.to_string(),
                    None => continue,
                };
                if !known(&key) {
                    problems.push(format!(
                        "{path}:{line}: `{word}` names no configuration key"
                    ));
                }
            }
        }
    }
    problems.dedup();
    fail_on(problems, "configuration keys named in the documentation");
}
