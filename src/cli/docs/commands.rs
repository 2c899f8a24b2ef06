//! The commands half of the documentation test: the command tree of the command line against the
//! Commands section of `docs/operators.md` and every `edc-ingest ...` the documentation writes.

use std::collections::BTreeSet;

use clap::CommandFactory;

use super::markdown::{Line, code, lines, section};
use super::{OPERATORS, documents, fail_on};
use crate::cli::Cli;

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
pub(super) fn commands_in(piece: &str, all: &BTreeSet<String>) -> Vec<String> {
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
