//! Which commands need the pseudonymisation key, and `EDC_CONFIG` against `--config`.

use super::*;

#[tokio::test]
async fn only_run_and_check_config_need_the_key() {
    let env = TestEnv::new().await;
    // Outcomes to look at: one record stored and one dead-lettered, of one batch.
    let batch = uuid::Uuid::new_v4().to_string();
    let mut good = record(vs_items());
    good["batch"] = json!({"id": batch, "size": 3});
    env.publish(&[("good", bytes(&good)), ("bad", from_site_4(&batch, 3))])
        .await;
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(2, WAIT).await;
    daemon.stop().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        format!(
            "{}\n",
            String::from_utf8(bytes(&record(vs_items()))).unwrap()
        ),
    )
    .unwrap();
    let file = file.path().display().to_string();

    for args in [
        vec!["migrate"],
        vec!["publish", file.as_str()],
        vec!["dlq", "list"],
        vec!["dlq", "show"],
        vec!["dlq", "replay", "--dry-run"],
        vec!["batch", "status", batch.as_str()],
        vec!["status", "--window", "0s"],
        vec!["prune", "--older-than", "30days"],
        vec!["dlq", "replay", "--kind", "invalid", "--actor", "t"],
        vec!["dlq", "purge", "--kind", "invalid", "--yes", "--actor", "t"],
    ] {
        let out = keyless(&env, &[], &args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} without a key:\n{}",
            text(&out)
        );
        assert!(
            !text(&out).contains("pseudonym"),
            "{args:?}:\n{}",
            text(&out)
        );
    }
    // The replay republished the dead letter: it is waiting in the work queue with the published one.
    wait_for(
        "the replayed and the published message queued",
        WAIT,
        || async { env.ready(&env.queue).await == 2 },
    )
    .await;
    for args in [["run"], ["check-config"]] {
        let out = keyless(&env, &[], &args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}:\n{}", text(&out));
        assert!(
            stderr(&out).contains("pseudonym"),
            "{args:?}:\n{}",
            text(&out)
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn edc_config_names_the_settings_file_and_config_wins_over_it() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edc.yaml");
    std::fs::write(&file, format!("amqp:\n  dead_letter_queue: {}\n", env.dlq)).unwrap();
    let file = file.display().to_string();
    let without_dlq = |extra: &[(&str, &str)], args: &[&str]| {
        let mut cmd = edc_command(&env, extra, args);
        cmd.env_remove("EDC__AMQP__DEAD_LETTER_QUEUE");
        cmd.stdin(Stdio::null()).output().unwrap()
    };

    let out = without_dlq(&[("EDC_CONFIG", &file)], &["dlq", "list"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).starts_with(&format!("0 dead letters in {} ", env.dlq)),
        "{}",
        text(&out)
    );
    let missing = dir.path().join("missing.yaml").display().to_string();
    let out = without_dlq(&[("EDC_CONFIG", &missing)], &["dlq", "list"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stderr(&out).contains("missing.yaml"), "{}", text(&out));
    // --config, given too, is the one read.
    let out = without_dlq(
        &[("EDC_CONFIG", &missing)],
        &["--config", &file, "dlq", "list"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains(&env.dlq), "{}", text(&out));
    env.cleanup().await;
}
