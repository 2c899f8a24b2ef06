//! The `dlq` commands: `--kind`, `--output json` (with `batch status`), control characters
//! escaped, replay to the lane a letter came from, and verdicts printed as replay goes.

use super::*;

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
