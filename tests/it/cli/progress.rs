//! Progress bars of `generate`, `publish` and `dlq replay`: drawn on a terminal only.

use super::*;

/// Runs `command` (a shell command line) on a pseudo-terminal of its own (`script`), with this
/// test's environment; what the terminal showed.
fn on_a_terminal(env: &TestEnv, command: &str) -> String {
    let mut script = Command::new("script");
    script
        .args(["-qec", command, "/dev/null"])
        .env_clear()
        .env("TERM", "xterm");
    for (k, v) in binary(env, &[]).get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    let out = script.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{command}: {}", text(&out));
    text(&out)
}

#[tokio::test]
async fn progress_is_drawn_on_a_terminal_and_nothing_is_written_to_stderr_otherwise() {
    let env = TestEnv::new().await;
    let bin = env!("CARGO_BIN_EXE_edc-ingest");
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("records.ndjson");

    // Without a terminal: the records on stdout, nothing on stderr.
    let out = edc(&env, &[], &["generate", "--count", "50", "--seed", "4"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).lines().count(), 50);
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    std::fs::write(&records, &out.stdout).unwrap();
    let mut child = edc_command(&env, &[], &["publish", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let published = child.wait_with_output().unwrap();
    assert!(published.status.success(), "{}", text(&published));
    assert_eq!(
        stdout(&published),
        format!("published 50 messages to {} (all confirmed)\n", env.queue)
    );
    assert!(published.stderr.is_empty(), "{}", stderr(&published));

    // On a terminal: the progress, ending at the total.
    let shown = on_a_terminal(
        &env,
        &format!(
            "{bin} generate --count 3000 --seed 4 > {}",
            records.display()
        ),
    );
    assert!(shown.contains("3000/3000 records"), "{shown:?}");
    let shown = on_a_terminal(&env, &format!("{bin} publish {}", records.display()));
    assert!(shown.contains("3000 published ("), "{shown:?}");
    wait_for("the 3,050 messages queued", WAIT, || async {
        env.ready(&env.queue).await == 3050
    })
    .await;
    for i in 0..3 {
        dead_letter(
            &env,
            &bytes(&record(vs_items())),
            BasicProperties::default().with_message_id(format!("p{i}").into()),
            &[],
        )
        .await;
    }
    let shown = on_a_terminal(&env, &format!("{bin} dlq replay --dry-run"));
    assert!(shown.contains("3/3 checked"), "{shown:?}");
    assert!(shown.contains("p2 [unknown] would be stored"), "{shown:?}");
    let quiet = edc(&env, &[], &["dlq", "replay", "--dry-run"]);
    assert!(
        quiet.status.success() && quiet.stderr.is_empty(),
        "{}",
        text(&quiet)
    );
    env.cleanup().await;
}
