//! The documentation checked against the code, so that neither can drift from the other: every
//! configuration key, metric and command that exists is documented in `docs/operators.md`, and
//! every one the documentation names exists; every link of `README.md` and `docs/` resolves.
//!
//! The sources of truth are the code's own: the settings (`config::Settings`, whose structs deny
//! unknown fields, and `config/default.yaml`, which documents every key with its default), the
//! metrics registry (`Stats::encode`) and the command tree (`Cli::command`). A failure lists every
//! problem, each saying what is missing where.

mod markdown;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use edc_ingest::config::{DEFAULT_YAML, Settings};
use edc_ingest::stats::Stats;
use serde_json::{Value, json};

use super::Cli;
use markdown::{Line, anchors, cell_code, code, code_spans, lines, links, rows, section};

/// The document that holds the configuration reference, the metrics and the commands.
const OPERATORS: &str = "docs/operators.md";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `README.md` and every `docs/*.md`, by their path from the repository's root.
fn documents() -> BTreeMap<String, String> {
    let read = |path: &str| {
        std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let mut docs = BTreeMap::from([("README.md".to_string(), read("README.md"))]);
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let name = entry.expect("docs/ entry").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".md") {
            let path = format!("docs/{name}");
            docs.insert(path.clone(), read(&path));
        }
    }
    docs
}

/// The lines of a section of `docs/operators.md`.
fn operators_section(docs: &BTreeMap<String, String>, title: &str) -> Vec<(usize, Vec<String>)> {
    let ls = lines(&docs[OPERATORS]);
    let part = section(&ls, title).unwrap_or_else(|| panic!("{OPERATORS} has no section {title}"));
    rows(&part)
}

fn fail_on(problems: Vec<String>, what: &str) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s)\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---- configuration ----

/// The leaves of `config/default.yaml` by dotted key, and its sections (mappings; "" the top).
fn defaults() -> (BTreeMap<String, Value>, BTreeMap<String, BTreeSet<String>>) {
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
fn settings_fields(section: &str) -> BTreeSet<String> {
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
fn shown(v: &Value) -> String {
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

// ---- metrics ----

#[test]
fn every_metric_is_documented_with_its_type_and_every_one_documented_exists() {
    let text = Stats::new().encode();
    let served: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
        .collect();
    assert!(served.len() > 10, "{text}");
    let docs = documents();
    let mut documented = BTreeSet::new();
    let mut problems = Vec::new();
    for (line, cells) in operators_section(&docs, "Metrics") {
        let Some(name) = cell_code(&cells[0]).filter(|n| n.starts_with("edc_")) else {
            continue;
        };
        documented.insert(name.to_string());
        match served.get(name) {
            None => problems.push(format!(
                "{OPERATORS}:{line}: `{name}` is documented but /metrics serves no such metric"
            )),
            Some(kind) if cells.get(1).map(String::as_str) != Some(*kind) => {
                problems.push(format!(
                    "{OPERATORS}:{line}: `{name}` is a {kind}, documented as {:?}",
                    cells.get(1)
                ))
            }
            Some(_) => {}
        }
    }
    for name in served.keys().filter(|n| !documented.contains(**n)) {
        problems.push(format!(
            "`{name}` (served on /metrics) is not in the metrics table of {OPERATORS}"
        ));
    }
    // A metric named anywhere else, as a series (`name{...}`) or by its suffix, exists too.
    for (path, text) in &docs {
        for line in lines(text).iter().filter(|l| l.fence.is_none()) {
            for span in code_spans(line.text) {
                let name = span.split('{').next().unwrap_or(span);
                let metric_like = name.starts_with("edc_")
                    && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    && (span.contains('{')
                        || ["_total", "_seconds", "_info"]
                            .iter()
                            .any(|s| name.ends_with(s)));
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| served.contains_key(b)))
                    .unwrap_or(name);
                if metric_like && !served.contains_key(base) {
                    problems.push(format!("{path}:{}: `{span}` is no metric", line.number));
                }
            }
        }
    }
    fail_on(problems, "the metrics");
}

// ---- commands ----

/// Every command of the command line, by the words that name it (`dlq show`), and which of them
/// take no subcommand.
fn command_tree() -> (BTreeSet<String>, BTreeSet<String>) {
    fn walk(
        cmd: &clap::Command,
        prefix: &str,
        all: &mut BTreeSet<String>,
        leaves: &mut BTreeSet<String>,
    ) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = format!("{prefix}{}", sub.get_name()).trim().to_string();
            all.insert(path.clone());
            if sub.get_subcommands().all(|s| s.get_name() == "help") {
                leaves.insert(path.clone());
            }
            walk(sub, &format!("{path} "), all, leaves);
        }
    }
    let (mut all, mut leaves) = (BTreeSet::new(), BTreeSet::new());
    walk(&Cli::command(), "", &mut all, &mut leaves);
    (all, leaves)
}

/// The commands a piece of code runs: `edc-ingest [--config PATH] WORD [WORD]`, as the words
/// after the options, when they are words (not `--help`, `<cmd>` or `list|show`).
fn commands_in(piece: &str, all: &BTreeSet<String>) -> Vec<String> {
    let tokens: Vec<&str> = piece.split_whitespace().collect();
    let word = |t: Option<&&str>| {
        t.filter(|t| t.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !t.starts_with('-'))
            .map(|t| t.to_string())
    };
    let mut out = Vec::new();
    for (i, _) in tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == "edc-ingest")
    {
        // `kubectl -n edc-ingest ...`, `name: edc-ingest`: the name, not the command.
        if i > 0 && (tokens[i - 1].starts_with('-') || tokens[i - 1].ends_with(':')) {
            continue;
        }
        let mut j = i + 1;
        while let Some(t) = tokens.get(j) {
            match *t {
                "--config" | "[--config" => j += 2,
                t if t.starts_with("--config=") => j += 1,
                _ => break,
            }
        }
        let Some(first) = word(tokens.get(j)) else {
            continue;
        };
        let two = word(tokens.get(j + 1)).map(|second| format!("{first} {second}"));
        match two {
            Some(path) if all.contains(&path) => out.push(path),
            Some(path) if all.iter().any(|c| c.starts_with(&format!("{first} "))) => out.push(path),
            _ => out.push(first),
        }
    }
    out
}

#[test]
fn every_command_is_documented_and_every_one_documented_exists() {
    let (all, leaves) = command_tree();
    assert!(
        leaves.contains("dlq show") && leaves.contains("run"),
        "{leaves:?}"
    );
    let docs = documents();
    let mut problems = Vec::new();
    let ls = lines(&docs[OPERATORS]);
    let commands = section(&ls, "Commands").expect("a Commands section in docs/operators.md");
    let documented: BTreeSet<String> = code(&commands)
        .into_iter()
        .flat_map(|(_, piece)| commands_in(piece, &all))
        .collect();
    for leaf in leaves.difference(&documented) {
        problems.push(format!(
            "`edc-ingest {leaf}` is not in the Commands section of {OPERATORS}"
        ));
    }
    for (path, text) in &docs {
        let ls: Vec<Line<'_>> = lines(text);
        for (line, piece) in code(&ls) {
            for command in commands_in(piece, &all) {
                if !all.contains(&command) {
                    problems.push(format!(
                        "{path}:{line}: `edc-ingest {command}` is no command"
                    ));
                }
            }
        }
    }
    fail_on(problems, "the commands");
}

// ---- links ----

#[test]
fn every_link_names_a_file_that_exists_and_a_heading_it_has() {
    let docs = documents();
    let mut problems = Vec::new();
    for (path, text) in &docs {
        let dir = Path::new(path).parent().unwrap_or(Path::new(""));
        for line in lines(text).iter().filter(|l| l.fence.is_none()) {
            for target in links(line.text) {
                if ["http://", "https://", "mailto:"]
                    .iter()
                    .any(|s| target.starts_with(s))
                {
                    continue;
                }
                let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
                let named = if file.is_empty() {
                    PathBuf::from(path)
                } else {
                    dir.join(file)
                };
                let on_disk = root().join(&named);
                let at = format!("{path}:{}", line.number);
                if !on_disk.exists() {
                    problems.push(format!(
                        "{at}: the link `{target}` names no file ({})",
                        named.display()
                    ));
                    continue;
                }
                if anchor.is_empty() {
                    continue;
                }
                let Ok(target_text) = std::fs::read_to_string(&on_disk) else {
                    problems.push(format!(
                        "{at}: the link `{target}` has an anchor but names no document"
                    ));
                    continue;
                };
                if !anchors(&lines(&target_text)).contains(anchor) {
                    problems.push(format!(
                        "{at}: the link `{target}`: {} has no heading #{anchor}",
                        named.display()
                    ));
                }
            }
        }
    }
    fail_on(problems, "the links");
}

#[test]
fn the_checks_find_what_they_look_for() {
    let all: BTreeSet<String> = ["run", "dlq", "dlq show"].map(String::from).into();
    assert_eq!(commands_in("$ edc-ingest --config /x run", &all), ["run"]);
    assert_eq!(
        commands_in("generate | edc-ingest dlq show --kind K", &all),
        ["dlq show"]
    );
    assert_eq!(commands_in("edc-ingest dlq nothing", &all), ["dlq nothing"]);
    assert_eq!(commands_in("edc-ingest odm import f.xml", &all), ["odm"]);
    assert!(commands_in("kubectl -n edc-ingest get pods; name: edc-ingest x", &all).is_empty());
    assert!(commands_in("edc-ingest --help", &all).is_empty());
    assert!(settings_fields("amqp.tls").contains("ca_file"));
    assert!(settings_fields("").contains("workers"));
    assert_eq!(shown(&json!(["a", "b"])), "[a, b]");
    assert_eq!(shown(&json!("")), "\"\"");
}
