//! The binary's commands the probe tests run: `healthcheck` and `publish -`.

use std::process::Output;

use super::WAIT;
use crate::helpers::*;

/// `edc-ingest healthcheck` with these arguments and variables, and nothing else of ours.
pub async fn healthcheck(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let check = Launch::new(BIN)
        .name("edc-ingest healthcheck")
        .args(["healthcheck"])
        .args(args)
        .envs(vars.iter().copied())
        .spawn();
    tokio::task::spawn_blocking(move || check.output_within(WAIT))
        .await
        .unwrap()
}

/// Publishes NDJSON lines with `edc-ingest publish -`, which stamps each with its publication time.
pub async fn publish_with_the_tool(env: &TestEnv, lines: &[String]) {
    let mut publish = launch(env, &[])
        .name("edc-ingest publish -")
        .args(["publish", "-"])
        .stdin_piped()
        .spawn();
    let input = lines.join("\n") + "\n";
    let mut stdin = publish.stdin();
    tokio::task::spawn_blocking(move || {
        std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap();
    })
    .await
    .unwrap();
    let out = publish.wait_exit(WAIT).await;
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("published {} messages", lines.len())),
        "{out:?}"
    );
}
