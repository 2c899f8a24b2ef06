//! Delivery limits, on every RabbitMQ version the tests run on (`scripts/test.sh` runs them on 3.10
//! and on 4.0). RabbitMQ 4 gives every quorum queue a delivery limit of 20 unless it declares one,
//! counts each return of a message towards it (a requeue, a closed channel, a lost connection), and
//! drops what passes it when the queue has no dead-letter exchange, as the dead-letter queue has
//! not. Dead letters are the one copy of records that could not be stored: looking at them, however
//! often, must never lose one.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// Five dead letters made by the daemon: four records from a site the protocol does not know and
/// one body that is not JSON. Returns their message ids.
async fn five_dead_letters(env: &TestEnv) -> BTreeSet<String> {
    let mut bodies: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            let mut r = record(vs_items());
            r["site"] = json!("SITE-09");
            (format!("dead-{i}"), bytes(&r))
        })
        .collect();
    bodies.push(("dead-4".into(), b"{not json, Ada Lovelace".to_vec()));
    let refs: Vec<(&str, Vec<u8>)> = bodies
        .iter()
        .map(|(i, b)| (i.as_str(), b.clone()))
        .collect();
    env.publish(&refs).await;
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(5, WAIT).await;
    daemon.stop().await;
    bodies.into_iter().map(|(id, _)| id).collect()
}

/// The message ids in the dead-letter queue, taken out for good.
async fn dead_letter_ids(env: &TestEnv) -> Vec<String> {
    env.drain_dlq()
        .await
        .iter()
        .map(|m| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .map_or("-".into(), |id| id.to_string())
        })
        .collect()
}

#[tokio::test]
async fn looking_at_the_dead_letters_fifty_times_loses_none() {
    // Arrange: five dead letters
    let env = TestEnv::new().await;
    let ids = five_dead_letters(&env).await;

    // Act: `dlq list` and `dlq show`, alternately, 50 times, as an operator would
    for run in 1..=50 {
        let (args, seen): (&[&str], fn(&str) -> usize) = if run % 2 == 1 {
            (&["dlq", "list"], |out| {
                usize::from(out.contains("5 dead letters in")) * 5
            })
        } else {
            (&["dlq", "show", "--count", "10"], |out| {
                out.matches("--- message_id").count()
            })
        };
        let out = edc(&env, &[], args);
        let shown = text(&out);
        assert!(out.status.success(), "run {run} {args:?}: {shown}");
        // Assert: every run sees all five
        assert_eq!(
            seen(&shown),
            5,
            "run {run} {args:?} saw fewer than 5: {shown}"
        );
    }

    // Assert: the queue still holds each of them, once
    let mut left = dead_letter_ids(&env).await;
    left.sort();
    assert_eq!(left, ids.into_iter().collect::<Vec<_>>());
    env.cleanup().await;
}

#[tokio::test]
async fn a_purge_abandoned_at_its_prompt_loses_no_dead_letter() {
    // Arrange: five dead letters, four of them `invalid`
    let env = TestEnv::new().await;
    let ids = five_dead_letters(&env).await;

    // Act: 25 times, `dlq purge --kind invalid` is killed while it asks for confirmation
    for run in 1..=25 {
        let mut child = edc_command(&env, &[], &["dlq", "purge", "--kind", "invalid"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _reaper = Reaper(child.id());
        let mut stderr = child.stderr.take().unwrap();
        let prompt = tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            while !String::from_utf8_lossy(&seen).contains("Type yes:") {
                if stderr.read(&mut byte).unwrap_or(0) == 0 {
                    break;
                }
                seen.push(byte[0]);
            }
            String::from_utf8_lossy(&seen).into_owned()
        });
        let prompt = tokio::time::timeout(WAIT, prompt)
            .await
            .expect("the purge asks in time")
            .unwrap();
        assert!(
            prompt.contains("purge 4 dead letters of kind invalid"),
            "run {run}: {prompt}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // Assert: nothing was lost, and a purge confirmed with --yes still removes exactly the four
    let list = text(&edc(&env, &[], &["dlq", "list"]));
    assert!(list.contains("5 dead letters in"), "{list}");
    let purged = text(&edc(
        &env,
        &[],
        &[
            "dlq", "purge", "--kind", "invalid", "--yes", "--actor", "dm-jane",
        ],
    ));
    assert!(purged.contains("purged 4"), "{purged}");
    let left = dead_letter_ids(&env).await;
    assert_eq!(left, vec!["dead-4".to_string()]);
    assert!(ids.contains("dead-4"));
    env.cleanup().await;
}
