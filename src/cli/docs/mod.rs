//! The documentation checked against the code, so that neither can drift from the other: every
//! configuration key, metric and command that exists is documented in `docs/operators.md`, and
//! every one the documentation names exists; every link of `README.md` and `docs/` resolves.
//!
//! The sources of truth are the code's own: the settings (`config::Settings`, whose structs deny
//! unknown fields, and `config/default.yaml`, which documents every key with its default), the
//! metrics registry (`Stats::encode`) and the command tree (`Cli::command`). A failure lists every
//! problem, each saying what is missing where.

mod commands;
mod markdown;
mod settings;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use edc_ingest::stats::Stats;
use serde_json::json;

use markdown::{anchors, cell_code, code_spans, lines, links, rows, section};

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

/// The table rows of a section of `docs/operators.md`.
fn operators_section(docs: &BTreeMap<String, String>, title: &str) -> Vec<(usize, Vec<String>)> {
    let ls = lines(&docs[OPERATORS]);
    let part = section(&ls, title).unwrap_or_else(|| panic!("{OPERATORS} has no section {title}"));
    rows(&part)
}

/// Fails with every problem found, one a line.
fn fail_on(problems: Vec<String>, what: &str) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s)\n{}",
        problems.len(),
        problems.join("\n")
    );
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

// ---- links ----

#[test]
fn every_link_resolves_and_every_code_span_ends_on_its_line() {
    let docs = documents();
    let mut problems = Vec::new();
    for (path, text) in &docs {
        let dir = Path::new(path).parent().unwrap_or(Path::new(""));
        for line in lines(text).iter().filter(|l| l.fence.is_none()) {
            // The reader (and this test) take a code span to end on its line.
            if line.text.matches('`').count() % 2 == 1 {
                problems.push(format!(
                    "{path}:{}: a code span that does not end on its line",
                    line.number
                ));
            }
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
    assert_eq!(
        commands::commands_in("$ edc-ingest --config /x run", &all),
        ["run"]
    );
    assert_eq!(
        commands::commands_in("generate | edc-ingest dlq show --kind K", &all),
        ["dlq show"]
    );
    assert_eq!(
        commands::commands_in("edc-ingest dlq nothing", &all),
        ["dlq nothing"]
    );
    assert_eq!(
        commands::commands_in("edc-ingest odm import f.xml", &all),
        ["odm"]
    );
    assert!(
        commands::commands_in("kubectl -n edc-ingest get pods; name: edc-ingest x", &all)
            .is_empty()
    );
    assert!(commands::commands_in("edc-ingest --help", &all).is_empty());
    assert!(settings::settings_fields("amqp.tls").contains("ca_file"));
    assert!(settings::settings_fields("").contains("workers"));
    assert_eq!(settings::shown(&json!(["a", "b"])), "[a, b]");
    assert_eq!(settings::shown(&json!("")), "\"\"");
}
