//! The command line as an operator meets it, through the real binary: which commands need the key,
//! `EDC_CONFIG`, help with examples, completions, `--kind` and `--output json`, output streamed and
//! escaped, progress only on a terminal, and `status`.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// The binary with this test's environment and no key setting at all.
fn keyless(env: &TestEnv, extra: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = edc_command(env, extra, args);
    cmd.env_remove("EDC__DEV_INSECURE_PSEUDONYM_KEY");
    cmd.stdin(Stdio::null());
    cmd
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One JSON document on stdout.
fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", text(o)))
}

/// Publishes a message straight into the dead-letter queue, as if it had been dead-lettered with
/// these properties and headers.
async fn dead_letter(env: &TestEnv, body: &[u8], props: BasicProperties, headers: &[(&str, &str)]) {
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let settings = env.settings(&[]);
    edc_ingest::broker::declare(&ch, &settings.amqp, &settings.retry)
        .await
        .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert((*k).into(), AMQPValue::LongString((*v).into()));
    }
    let confirm = ch
        .basic_publish(
            ShortString::from(""),
            ShortString::from(env.dlq.as_str()),
            Default::default(),
            body,
            props.with_headers(table).with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    conn.close(200, "bye".into()).await.unwrap();
}

/// A record from SITE-04 (not a site of the study): dead-lettered as invalid.
fn from_site_4(batch: &str, size: u32) -> Vec<u8> {
    let mut r = record(vs_items());
    r["site"] = json!("SITE-04");
    r["batch"] = json!({"id": batch, "size": size});
    bytes(&r)
}

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

/// The binary with nothing of the environment but PATH and `vars`.
fn bare(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edc-ingest"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn every_command_has_help_with_an_example() {
    for path in [
        &[][..],
        &["run"],
        &["migrate"],
        &["check-config"],
        &["generate"],
        &["publish"],
        &["prune"],
        &["batch"],
        &["batch", "status"],
        &["dlq"],
        &["dlq", "list"],
        &["dlq", "show"],
        &["dlq", "replay"],
        &["dlq", "purge"],
        &["status"],
        &["healthcheck"],
        &["completions"],
    ] {
        let mut args = path.to_vec();
        args.push("--help");
        let out = bare(&[], &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        let help = stdout(&out);
        let example = help
            .lines()
            .find_map(|l| l.trim().strip_prefix("$ edc-ingest"))
            .unwrap_or_else(|| panic!("{path:?}: no example in\n{help}"));
        assert!(
            example.contains(&path.join(" ")),
            "{path:?}: the example runs something else: {example}"
        );
    }
    let out = bare(&[], &["dlq", "show", "--help"]);
    assert!(
        stdout(&out).contains("broker:delivery_limit"),
        "{}",
        text(&out)
    );
}

#[test]
fn completions_are_printed_for_every_shell_without_any_settings() {
    // Settings that would stop any command that reads them.
    let broken = [
        ("EDC_CONFIG", "/nonexistent/edc.yaml"),
        ("EDC__WORKERS", "many"),
    ];
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef edc-ingest"),
        ("fish", "complete -c edc-ingest"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[edc-ingest]"),
    ] {
        let out = bare(&broken, &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {marker} missing");
        for word in ["dlq", "status", "replay", "output"] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
        if matches!(shell, "bash" | "zsh" | "fish") {
            assert!(
                script.contains("delivery_limit"),
                "{shell}: the kinds are missing"
            );
        }
        assert!(stderr(&out).is_empty(), "{shell}: {}", stderr(&out));
    }
    let out = bare(&[], &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bash"), "{}", text(&out));
}

#[tokio::test]
async fn kind_takes_only_the_real_kinds() {
    let env = TestEnv::new().await;
    let out = edc(&env, &[], &["dlq", "list", "--kind", "invalidd"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = stderr(&out);
    for kind in [
        "malformed",
        "too_large",
        "invalid",
        "conflict",
        "panic",
        "failed",
        "poison",
        "broker:delivery_limit",
        "broker:expired",
        "broker:rejected",
        "broker:maxlen",
        "unknown",
    ] {
        assert!(said.contains(kind), "{kind} not listed: {said}");
    }
    let out = edc(
        &env,
        &[],
        &["dlq", "list", "--kind", "broker:delivery_limit"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).starts_with("0 dead letters"), "{}", text(&out));
    env.cleanup().await;
}

#[tokio::test]
async fn dlq_list_dlq_show_and_batch_status_answer_in_json() {
    let env = TestEnv::new().await;
    let batch = uuid::Uuid::new_v4().to_string();
    let mut good = record(vs_items());
    good["batch"] = json!({"id": batch, "size": 5});
    env.publish(&[
        ("good", bytes(&good)),
        ("bad-1", from_site_4(&batch, 5)),
        ("bad-2", from_site_4(&batch, 5)),
    ])
    .await;
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(3, WAIT).await;
    daemon.stop().await;

    let list = json_of(&edc(&env, &[], &["dlq", "list", "--output", "json"]));
    assert_eq!(list["queue"], json!(env.dlq));
    assert_eq!(list["looked_at"], json!(2));
    assert_eq!(list["matching"], json!(2));
    assert_eq!(list["limit"], json!(10_000));
    assert_eq!(
        list["by_kind_and_reason"],
        json!([{"kind": "invalid", "reason": "site is not one of study DEMO-001's sites", "count": 2}])
    );
    assert_eq!(list["by_study"], json!([{"study": "DEMO-001", "count": 2}]));
    assert_eq!(list["by_site"], json!([{"site": "SITE-04", "count": 2}]));
    assert_eq!(list["by_batch"], json!([{"batch_id": batch, "count": 2}]));

    let show = edc(
        &env,
        &[],
        &["dlq", "show", "--output", "json", "--count", "5"],
    );
    assert!(show.status.success(), "{}", text(&show));
    let letters: Vec<Value> = stdout(&show)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2, "{}", text(&show));
    // The daemon's workers dead-letter the two in either order.
    let mut ids: Vec<&str> = letters
        .iter()
        .map(|l| l["message_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["bad-1", "bad-2"]);
    let l = &letters[0];
    assert_eq!(l["kind"], json!("invalid"));
    assert_eq!(
        l["reason"],
        json!("site is not one of study DEMO-001's sites")
    );
    assert_eq!(l["attempts"], json!(1));
    assert_eq!(l["queue"], json!(env.queue));
    assert!(
        l["failed_at"].is_string() && l["consumer"].is_string(),
        "{l}"
    );
    assert_eq!(l["reply_to"], Value::Null);
    assert_eq!(l["expires_at"], Value::Null);
    assert!(l["body_bytes"].as_u64().unwrap() > 100, "{l}");
    assert_eq!(l["preview"]["items"]["SYSBP"], json!(128));
    assert_eq!(
        l["preview"]["identifiers"]["full_name"],
        json!("[withheld]")
    );
    assert_eq!(l["preview"]["site"], json!("SITE-04"));
    for needle in [
        "Ada",
        "Lovelace",
        "1961-03-02",
        "MRN-778899",
        "ada@example.org",
    ] {
        assert!(!stdout(&show).contains(needle) && !list.to_string().contains(needle));
    }
    // Nothing matches: no line at all.
    let none = edc(
        &env,
        &[],
        &["dlq", "show", "--kind", "poison", "--output", "json"],
    );
    assert!(
        none.status.success() && none.stdout.is_empty(),
        "{}",
        text(&none)
    );

    let receipt = json_of(&edc(
        &env,
        &[],
        &["batch", "status", &batch, "--output", "json"],
    ));
    assert_eq!(receipt["batch_id"], json!(batch));
    assert_eq!(receipt["state"], json!("in_progress"));
    assert_eq!(receipt["expected"], json!(5));
    assert_eq!(receipt["outcomes"], json!(3));
    assert_eq!(receipt["accepted"], json!(1));
    assert_eq!(receipt["queried"], json!(0));
    assert_eq!(receipt["duplicates"], json!(0));
    assert_eq!(receipt["dead_lettered"], json!(2));
    assert_eq!(receipt["dead_lettered_by_kind"], json!({"invalid": 2}));
    assert_eq!(receipt["completed_at"], Value::Null);
    for at in ["first_outcome_at", "last_update_at"] {
        let t = receipt[at].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{at}: {t}");
    }
    // The text form says the same.
    let shown = stdout(&edc(&env, &[], &["batch", "status", &batch]));
    assert!(
        shown.contains("in progress: 3 of 5 messages")
            && shown.contains("dead-lettered  2 (invalid 2)"),
        "{shown}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn dlq_show_list_and_replay_print_control_characters_escaped() {
    let env = TestEnv::new().await;
    let id = "msg\u{1b}[2J\u{202e}4202\nforged line";
    let reason = "bad\u{1b}]0;owned\u{7} \u{2066}x\u{2069}\r\nkind: fake";
    let body = bytes(&record(vs_items()));
    dead_letter(
        &env,
        &body,
        BasicProperties::default()
            .with_message_id(id.into())
            .with_reply_to("edc.reply.\u{1b}[31mred".into()),
        &[],
    )
    .await;
    // Its rejections row, with a reason and a consumer as hostile as can be: what the evidence says
    // is escaped too.
    env.db()
        .await
        .execute(
            "INSERT INTO rejections (message_id, kind, reason, body_sha256, consumer)
             VALUES ($1, 'invalid', $2, $3, 'host\u{1b}[1A:1')",
            &[&id, &reason, &edc_ingest::pipeline::sha256_hex(&body)],
        )
        .await
        .unwrap();
    // And one edc-ingest did not make: its forged x-edc-* headers are shown as such, escaped.
    dead_letter(
        &env,
        &bytes(&record(vs_items())),
        BasicProperties::default().with_message_id("not-ours".into()),
        &[("x-edc-failed-at", "2026-11-20T10:15:00Z\u{202e}")],
    )
    .await;
    let id_shown = r"msg\u{1b}[2J\u{202e}4202\u{a}forged line";
    let reason_shown = r"bad\u{1b}]0;owned\u{7} \u{2066}x\u{2069}\u{d}\u{a}kind: fake";
    let raw = ['\u{1b}', '\u{202e}', '\u{2066}', '\u{7}', '\r'];

    let show = edc(&env, &[], &["dlq", "show"]);
    assert!(show.status.success(), "{}", text(&show));
    let out = stdout(&show);
    assert!(
        out.contains(&format!("--- message_id {id_shown}\n")),
        "{out}"
    );
    assert!(out.contains(&format!("reason: {reason_shown}\n")), "{out}");
    assert!(out.contains(r"consumer: host\u{1b}[1A:1"), "{out}");
    assert!(
        out.contains(r"  x-edc-failed-at: 2026-11-20T10:15:00Z\u{202e}"),
        "{out}"
    );
    assert!(out.contains(r"reply_to: edc.reply.\u{1b}[31mred"), "{out}");
    assert!(
        !out.contains("\nforged line") && !out.contains("\nkind: fake"),
        "{out}"
    );
    assert!(
        !out.contains(raw),
        "a raw control character was printed: {out:?}"
    );

    let json = edc(&env, &[], &["dlq", "show", "--output", "json"]);
    let first = stdout(&json).lines().next().unwrap_or_default().to_string();
    let letter: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(letter["message_id"], json!(id_shown));
    assert_eq!(letter["reason"], json!(reason_shown));
    assert!(!stdout(&json).contains(raw), "{}", stdout(&json));

    let list = stdout(&edc(&env, &[], &["dlq", "list"]));
    assert!(
        list.contains(&format!("1  invalid: {reason_shown}\n")),
        "{list}"
    );
    assert!(!list.contains(raw), "{list:?}");

    let dry = edc(&env, &[], &["dlq", "replay", "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    let out = stdout(&dry);
    assert!(
        out.starts_with(&format!("{id_shown} [invalid] would be stored as accepted")),
        "{out}"
    );
    assert!(!out.contains(raw), "{out:?}");
    // Looking changed nothing: both dead letters are still there.
    assert_eq!(env.drain_dlq().await.len(), 2);
    env.cleanup().await;
}

#[tokio::test]
async fn a_dead_letter_from_the_urgent_queue_looked_at_then_replayed_goes_back_to_the_urgent_queue()
{
    let env = TestEnv::new().await;
    let urgent = env.urgent_queue();
    // An urgent record the daemon dead-letters (SITE-04 is not a site of the study): the broker
    // keeps the urgent queue as its routing key.
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut line = from_site_4(&uuid::Uuid::new_v4().to_string(), 1);
    line.push(b'\n');
    std::fs::write(file.path(), line).unwrap();
    let path = file.path().display().to_string();
    let out = edc(&env, &[], &["publish", "--urgent", &path]);
    assert!(out.status.success(), "{}", text(&out));
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(1, WAIT).await;
    daemon.stop().await;
    wait_for("the dead letter", WAIT, || async {
        env.ready(&env.dlq).await == 1
    })
    .await;

    // Looking at it puts back a copy, published to the dead-letter queue by name: twice, so that a
    // copy of a copy is looked at too.
    for _ in 0..2 {
        let out = edc(&env, &[], &["dlq", "list"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(stdout(&out).contains("1  invalid: "), "{}", text(&out));
    }
    let out = edc(&env, &[], &["dlq", "show", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json_of(&out)["queue"], json!(urgent), "{}", text(&out));

    let out = edc(&env, &[], &["dlq", "replay", "--actor", "dm-jane"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("replayed 1 of 1 dead letters"),
        "{}",
        text(&out)
    );
    wait_for("the replayed message in the urgent queue", WAIT, || async {
        env.ready(&urgent).await == 1
    })
    .await;
    assert_eq!(env.ready(&env.queue).await, 0, "nothing in the normal lane");
    assert_eq!(env.ready(&env.dlq).await, 0, "the dead letter was removed");
    let replayed = env.drain(&urgent).await;
    assert_eq!(header(&replayed[0], "x-edc-queue"), None, "{replayed:?}");
    assert_eq!(header(&replayed[0], "x-edc-error-kind"), None);
    assert_eq!(
        header(&replayed[0], "x-edc-replayed-by").as_deref(),
        Some("dm-jane")
    );
    assert_eq!(
        env.count("SELECT count(*) FROM dlq_actions WHERE action = 'replay'")
            .await,
        1
    );
    env.cleanup().await;
}

#[tokio::test]
async fn replay_prints_each_verdict_as_it_goes_and_a_failure_part_way_keeps_them_and_the_letters() {
    let env = TestEnv::new().await;
    for i in 0..3 {
        dead_letter(
            &env,
            &bytes(&record(vs_items())),
            BasicProperties::default().with_message_id(format!("r{i}").into()),
            // A forged kind, not believed: they have no rejections row.
            &[("x-edc-error-kind", "failed"), ("x-edc-error", "test")],
        )
        .await;
    }
    // The database refuses the second replay's record: the replay fails part-way.
    env.db()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse_second() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF (SELECT count(*) FROM dlq_actions) >= 1 THEN
                     RAISE EXCEPTION 'refused by the test';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_second BEFORE INSERT ON dlq_actions
                 FOR EACH ROW EXECUTE FUNCTION refuse_second();",
        )
        .await
        .unwrap();

    let out = edc(&env, &[], &["dlq", "replay", "--actor", "dm-jane"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{}", text(&out));
    assert!(
        lines[0].starts_with("r0 [unknown] would be stored as accepted"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("r1 [unknown] would be stored as accepted"),
        "{lines:?}"
    );
    assert!(
        stderr(&out).contains("refused by the test"),
        "{}",
        text(&out)
    );
    // r0 was replayed and recorded; r1 was republished but not recorded, so it stays a dead letter
    // too (a repeat, never a loss); r2 was not reached. Both are back in the queue.
    assert_eq!(env.count("SELECT count(*) FROM dlq_actions").await, 1);
    let left = message_ids(&env.drain_dlq().await);
    assert_eq!(left, ["r1", "r2"]);
    let queued = message_ids(&env.drain(&env.queue).await);
    assert_eq!(queued, ["r0", "r1"]);
    env.cleanup().await;
}

/// The message ids of `messages`, in order.
fn message_ids(messages: &[lapin::message::BasicGetMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let id = m.delivery.properties.message_id();
            id.as_ref().map_or(String::new(), |i| i.to_string())
        })
        .collect()
}

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

/// A stand-in replica: answers `/metrics` with `pages`, one per request, the last one again after.
/// On a thread of its own: the test's runtime is blocked while the binary runs.
fn replica(pages: Vec<String>) -> u16 {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (served, socket) in listener.incoming().enumerate() {
            let Ok(mut socket) = socket else { return };
            // The whole request first: a reply sent half-way through it breaks the client's pipe.
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let page = &pages[served.min(pages.len() - 1)];
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = socket.write_all(answer.as_bytes());
        }
    });
    port
}

fn metrics_page(accepted: u64) -> String {
    format!(
        "# TYPE edc_workers gauge\nedc_workers 8\nedc_workers_busy 3\nedc_ready 1\nedc_broker_connected 1\n\
         edc_db_gate_open 1\nedc_outbox_backlog 2\nedc_relay_lag_seconds 0.5\n\
         edc_build_info{{version=\"9.9.9\"}} 1\n\
         edc_messages_total{{outcome=\"accepted\"}} {accepted}\n\
         edc_messages_total{{outcome=\"queried\"}} 7\n\
         edc_messages_total{{outcome=\"dead_lettered\"}} 1\n\
         edc_deliveries_in_flight{{lane=\"normal\"}} 3\nedc_deliveries_in_flight{{lane=\"urgent\"}} 0\n# EOF\n"
    )
}

#[tokio::test]
async fn status_shows_the_queues_the_dead_letters_the_open_batches_and_the_replicas() {
    let env = TestEnv::new().await;
    // Two dead-lettered and one stored of a batch of 5, then three messages left waiting.
    let batch = uuid::Uuid::new_v4().to_string();
    let mut good = record(vs_items());
    good["batch"] = json!({"id": batch, "size": 5});
    env.publish(&[
        ("good", bytes(&good)),
        ("bad-1", from_site_4(&batch, 5)),
        ("bad-2", from_site_4(&batch, 5)),
    ])
    .await;
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(3, WAIT).await;
    daemon.stop().await;
    env.publish_lines(&generated(3, 9, 0.0, 0.0)).await;
    wait_for("3 messages waiting", WAIT, || async {
        env.ready(&env.queue).await == 3
    })
    .await;
    wait_for("2 dead letters", WAIT, || async {
        env.ready(&env.dlq).await == 2
    })
    .await;
    let nobody = format!("127.0.0.1:{}", free_port());

    // One reading, no daemon running: JSON.
    let out = edc(
        &env,
        &[],
        &[
            "status",
            "--window",
            "0s",
            "--metrics",
            &nobody,
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = json_of(&out);
    assert_eq!(s["window_seconds"], json!(0.0));
    assert_eq!(s["broker"]["answered"], json!(true));
    assert_eq!(
        queue_of(&s, "work"),
        json!({"role": "work", "name": env.queue, "exists": true, "ready": 3, "consumers": 0,
               "change_per_second": null})
    );
    assert_eq!(queue_of(&s, "dead_letter")["ready"], json!(2));
    assert_eq!(queue_of(&s, "urgent")["ready"], json!(0));
    assert_eq!(queue_of(&s, "delay")["exists"], json!(true));
    assert_eq!(
        s["backlog"],
        json!({"ready": 3, "change_per_second": null, "verdict": "not_consumed", "drained_in_seconds": null})
    );
    assert_eq!(s["database"]["answered"], json!(true));
    let kinds = s["database"]["dead_letters_by_kind"].as_array().unwrap();
    assert_eq!(kinds.len(), 7);
    assert!(kinds.contains(&json!({"kind": "invalid", "last_hour": 2, "last_day": 2})));
    assert!(kinds.contains(&json!({"kind": "malformed", "last_hour": 0, "last_day": 0})));
    let open = &s["database"]["open_batches"];
    assert_eq!(open["count"], json!(1));
    assert_eq!(open["oldest"][0]["batch_id"], json!(batch));
    assert_eq!(open["oldest"][0]["expected"], json!(5));
    assert_eq!(open["oldest"][0]["outcomes"], json!(3));
    let r = &s["replicas"][0];
    assert_eq!(r["url"], json!(format!("http://{nobody}/metrics")));
    assert_eq!(r["answered"], json!(false));
    assert!(
        r["error"].as_str().unwrap().contains("cannot connect"),
        "{r}"
    );
    assert_eq!(s["total_rates_per_second"], Value::Null);

    // The same as text, on one screen.
    let out = edc(
        &env,
        &[],
        &["status", "--window", "0s", "--metrics", &nobody],
    );
    assert!(out.status.success(), "{}", text(&out));
    let screen = stdout(&out);
    assert!(screen.lines().count() < 40, "{screen}");
    for expected in [
        format!("{} (work)", env.queue),
        "verdict: not consumed: 3 waiting".to_string(),
        "  invalid ".to_string(),
        format!("open batches: 1 (oldest first)\n  {batch}  3 of 5 outcomes"),
        format!("http://{nobody}/metrics: unreachable: cannot connect"),
    ] {
        assert!(screen.contains(&expected), "{expected:?} not in:\n{screen}");
    }

    // Rates: a stand-in replica whose counter grows by 300 between the two scrapes.
    let port = replica(vec![metrics_page(100), metrics_page(400)]);
    let out = edc(
        &env,
        &[],
        &[
            "status",
            "--window",
            "1s",
            "--metrics",
            &format!("127.0.0.1:{port}"),
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = json_of(&out);
    assert_eq!(s["window_seconds"], json!(1.0));
    let r = &s["replicas"][0];
    assert_eq!(r["answered"], json!(true), "{r}");
    assert_eq!(r["version"], json!("9.9.9"));
    assert_eq!(r["ready"], json!(true));
    assert_eq!(r["workers"], json!(8));
    assert_eq!(r["workers_busy"], json!(3));
    assert_eq!(r["deliveries_in_flight"], json!(3));
    assert_eq!(r["outbox_backlog"], json!(2));
    let over = r["rates_over_seconds"].as_f64().unwrap();
    assert!(over >= 0.9, "{r}");
    let rates = &r["rates_per_second"];
    let accepted = rates["accepted"].as_f64().unwrap();
    assert!((accepted * over - 300.0).abs() < 1e-6, "{r}");
    assert_eq!(rates["stored"], rates["accepted"]);
    assert_eq!(rates["queried"], json!(0.0));
    assert_eq!(s["total_rates_per_second"], *rates);
    // The queue's trend over the window: nothing consumes it, so no change.
    assert_eq!(queue_of(&s, "work")["change_per_second"], json!(0.0));
    assert_eq!(s["backlog"]["verdict"], json!("not_consumed"));

    // A real replica: the daemon drains the queue, and status reads its /metrics.
    let http = free_port();
    let listen = format!("127.0.0.1:{http}");
    let mut daemon = run_daemon(&env, &[("EDC__HTTP__LISTEN", &listen)]);
    assert_eq!(daemon.wait_ready(WAIT).await, http);
    wait_for("the queue drained", WAIT, || async {
        env.ready(&env.queue).await == 0
    })
    .await;
    let out = edc(
        &env,
        &[("EDC__HTTP__LISTEN", &listen)],
        &["status", "--window", "1s", "--output", "json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = json_of(&out);
    let r = &s["replicas"][0];
    assert_eq!(
        r["url"],
        json!(format!("http://{listen}/metrics")),
        "the default replica"
    );
    assert_eq!(r["answered"], json!(true), "{r}");
    assert_eq!(r["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(r["ready"], json!(true));
    assert_eq!(r["broker_connected"], json!(true));
    assert_eq!(r["db_gate_open"], json!(true));
    assert_eq!(r["workers"], json!(4));
    assert!(r["rates_per_second"]["stored"].is_number(), "{r}");
    assert_eq!(s["backlog"]["verdict"], json!("keeping_up"));
    assert_eq!(queue_of(&s, "work")["consumers"], json!(1));
    let exit = daemon.stop(WAIT).await;
    assert!(exit.success(), "{}", exit.stderr);
    env.cleanup().await;
}

fn queue_of(s: &Value, role: &str) -> Value {
    s["broker"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["role"] == json!(role))
        .unwrap()
        .clone()
}

#[tokio::test]
async fn status_exits_1_when_the_broker_or_the_database_cannot_be_read_and_shows_the_rest() {
    let env = TestEnv::new().await;
    let closed = free_port();
    let no_broker = format!("amqp://guest:guest@127.0.0.1:{closed}/%2f");
    let out = edc(
        &env,
        &[("EDC__AMQP__URL", &no_broker)],
        &["status", "--window", "0s"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let screen = stdout(&out);
    assert!(screen.contains("broker: could not be read:"), "{screen}");
    assert!(screen.contains("verdict: unknown"), "{screen}");
    assert!(
        screen.contains("open batches: none"),
        "the database part is shown: {screen}"
    );
    assert!(
        stderr(&out).contains("status: the broker could not be read"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("guest:guest"), "no password printed");

    let no_db = format!("postgres://edc:edc@127.0.0.1:{closed}/edc");
    let out = edc(
        &env,
        &[("EDC__POSTGRES__URL", &no_db)],
        &["status", "--window", "0s", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = json_of(&out);
    assert_eq!(s["database"]["answered"], json!(false));
    assert!(s["database"]["error"].is_string());
    assert_eq!(
        s["broker"]["answered"],
        json!(true),
        "the broker part is shown"
    );
    assert!(
        stderr(&out).contains("the database could not be read"),
        "{}",
        text(&out)
    );

    let out = edc(
        &env,
        &[
            ("EDC__AMQP__URL", &no_broker),
            ("EDC__POSTGRES__URL", &no_db),
        ],
        &["status", "--window", "0s"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the broker and the database could not be read"),
        "{}",
        text(&out)
    );
    env.cleanup().await;
}
