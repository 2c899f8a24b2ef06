//! An ODM file from end to end: `edc-ingest odm import` (the real binary) publishes each form
//! instance of tests/data/odm-import/import.xml as a message of one upload batch; the daemon
//! stores them; `item_values` then holds the file's values; the batch receipt counts every form;
//! importing the same file again stores nothing and its own receipt counts every form again. And
//! the batch headers an uploader sets, read as hostile.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::Value;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

fn studies() -> String {
    repo().join("tests/data/odm-import").display().to_string()
}

/// `odm import` of the fixture (with the site and visit it lacks), its JSON report.
fn import(env: &TestEnv) -> Value {
    let file = repo().join("tests/data/odm-import/import.xml");
    let out = edc(
        env,
        &[("EDC__STUDIES_DIR", &studies())],
        &[
            "odm",
            "import",
            file.to_str().unwrap(),
            "--site",
            "SITE.C",
            "--visit",
            "SE.BASE",
            "--output",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

/// `batch status ID --output json` once the receipt is complete: (expected, accepted, queried,
/// duplicates, dead letters by kind).
async fn receipt(env: &TestEnv, id: &str) -> (i64, i64, i64, i64, Value) {
    let mut last = Value::Null;
    for _ in 0..150 {
        let out = edc(env, &[], &["batch", "status", id, "--output", "json"]);
        if out.status.success() {
            last = serde_json::from_slice(&out.stdout).unwrap();
            if last["state"] == "complete" {
                let n = |k: &str| last[k].as_i64().unwrap();
                return (
                    n("expected"),
                    n("accepted"),
                    n("queried"),
                    n("duplicates"),
                    last["dead_lettered_by_kind"].clone(),
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("batch {id} did not complete: {last}");
}

/// `item_values`, one line each: subject, visit and repeat, form and repeat, group and row, item,
/// value (a `phi` item's pseudonym shown as `<pseudonym>` once checked not to be the text).
async fn item_values(env: &TestEnv) -> Vec<String> {
    let rows = env
        .db()
        .await
        .query(
            "SELECT concat_ws(' ', subject, visit, visit_repeat, form, form_repeat, \
                    coalesce(item_group, '-'), coalesce(group_repeat, '-'), item), value \
             FROM item_values ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let key: String = r.get(0);
            let value: Option<String> = r.get(1);
            let value = value.unwrap_or_else(|| "null".into());
            if key.ends_with("I.AETERM") {
                assert!(
                    !["Headache", "Nausea", "Rash"]
                        .iter()
                        .any(|t| value.contains(t)),
                    "{key}: a phi item is stored as its pseudonym"
                );
                format!("{key} = <pseudonym>")
            } else {
                format!("{key} = {value}")
            }
        })
        .collect()
}

#[tokio::test]
async fn an_imported_file_is_stored_as_its_values_and_imported_again_stores_nothing_new() {
    let env = TestEnv::new().await;
    let daemon = Daemon::start(env.settings(&[("EDC__STUDIES_DIR", &studies())]));

    // Act: import the file; the daemon drains it.
    let first = import(&env);
    assert_eq!(first["published"], 11, "{first}");
    daemon.wait_settled(11, WAIT).await;

    // Assert: 8 forms accepted; 2 queried: S-001's second week (systolic 300 is outside its
    // range) and S-002's Update (nothing stored to update: its required items are missing, a
    // soft check); S-002's Remove of a form never stored is a duplicate (nothing to remove).
    let batch = first["batch_id"].as_str().expect("a batch id").to_string();
    let (expected, accepted, queried, duplicates, dead) = receipt(&env, &batch).await;
    assert_eq!((expected, accepted, queried, duplicates), (11, 8, 2, 1));
    assert_eq!(dead, serde_json::json!({}));
    let stored = env.count("SELECT count(*) FROM crf_records").await;
    assert_eq!(stored, 10);

    // Assert: the values are the file's, in their canonical form.
    let values = item_values(&env).await;
    let want = [
        "S-001 SE.AE 1 F.AE 1 - - I.AEYN = true",
        "S-001 SE.AE 1 F.AE 1 IG.AELOG 1 I.AESTDAT = 2026-11",
        "S-001 SE.AE 1 F.AE 1 IG.AELOG 1 I.AETERM = <pseudonym>",
        "S-001 SE.AE 1 F.AE 1 IG.AELOG 2 I.AESTDAT = 2026-11-12",
        "S-001 SE.AE 1 F.AE 1 IG.AELOG 2 I.AETERM = <pseudonym>",
        "S-001 SE.AE 1 F.AE 2 - - I.AEYN = false",
        "S-001 SE.BASE 1 F.DM 1 - - I.BRTHYR = 1961",
        "S-001 SE.BASE 1 F.DM 1 - - I.SEX = F",
        "S-001 SE.BASE 1 F.VS 1 - - I.PULSE = 71",
        "S-001 SE.BASE 1 F.VS 1 - - I.SYSBP = 128",
        "S-001 SE.BASE 1 F.VS 1 - - I.VSDAT = 2026-11-02",
        "S-001 SE.WEEK 1 F.VS 1 - - I.SYSBP = 131",
        "S-001 SE.WEEK 1 F.VS 1 - - I.VSDAT = 2026-11-09",
        "S-001 SE.WEEK 2 F.VS 1 - - I.SYSBP = 300",
        "S-001 SE.WEEK 2 F.VS 1 - - I.VSDAT = 2026-11-16",
        "S-002 SE.AE 1 F.AE 1 - - I.AEYN = true",
        "S-002 SE.AE 1 F.AE 1 IG.AELOG 1 I.AESTDAT = 2026",
        "S-002 SE.AE 1 F.AE 1 IG.AELOG 1 I.AETERM = <pseudonym>",
        "S-002 SE.BASE 1 F.VS 1 - - I.PULSE = 66",
        "S-003 SE.BASE 1 F.DM 1 - - I.SEX = M",
        "S-003 SE.BASE 1 F.VS 1 - - I.SYSBP = 118",
        "S-003 SE.BASE 1 F.VS 1 - - I.VSDAT = 2026-11-05",
    ];
    assert_eq!(values, want);
    let sites = env
        .count("SELECT count(*) FROM crf_records WHERE subject = 'S-003' AND site = 'SITE.C'")
        .await;
    assert_eq!(sites, 2, "--site gives the site the file does not say");

    // Act: the same file again.
    let second = import(&env);
    daemon.wait_settled(22, WAIT).await;

    // Assert: nothing new is stored (the Update gives the value stored already); the new batch
    // counts every form, as a duplicate.
    let again = second["batch_id"].as_str().unwrap().to_string();
    assert_ne!(again, batch);
    let (expected, accepted, queried, duplicates, dead) = receipt(&env, &again).await;
    assert_eq!((expected, accepted, queried, duplicates), (11, 0, 0, 11));
    assert_eq!(dead, serde_json::json!({}));
    let stored = env.count("SELECT count(*) FROM crf_records").await;
    assert_eq!(stored, 10, "importing the same file again stores nothing");
    assert_eq!(item_values(&env).await, want);
    daemon.stop().await;
    env.cleanup().await;
}

/// One form of ST.IMPORT (S-009's vital signs), systolic pressure `sysbp`.
fn one_form(sysbp: &str) -> Vec<u8> {
    format!(
        r#"<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" ODMVersion="1.3.2" FileType="Snapshot"
     FileOID="F.9" CreationDateTime="2026-12-01T09:00:00Z">
  <ClinicalData StudyOID="ST.IMPORT" MetaDataVersionOID="MDV.1">
    <SubjectData SubjectKey="S-009"><SiteRef LocationOID="SITE.A"/>
      <StudyEventData StudyEventOID="SE.BASE"><FormData FormOID="F.VS">
        <ItemGroupData ItemGroupOID="IG.VS">
          <ItemData ItemOID="I.VSDAT" Value="2026-12-01"/><ItemData ItemOID="I.SYSBP" Value="{sysbp}"/>
        </ItemGroupData>
      </FormData></StudyEventData>
    </SubjectData>
  </ClinicalData>
</ODM>"#
    )
    .into_bytes()
}

fn batch_props(id: &str, headers: &[(&str, AMQPValue)]) -> BasicProperties {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert(ShortString::from(*k), v.clone());
    }
    BasicProperties::default()
        .with_content_type(ShortString::from("application/vnd.cdisc.odm+xml"))
        .with_message_id(ShortString::from(id))
        .with_headers(table)
}

fn text_value(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_string()))
}

#[tokio::test]
async fn batch_headers_are_read_as_hostile_and_a_resent_message_counts_once() {
    let env = TestEnv::new().await;
    let daemon = Daemon::start(env.settings(&[("EDC__STUDIES_DIR", &studies())]));
    let planted = "Jane Doe 1957-03-14";
    let batch = "0d7c3e4a-5b6f-4a1e-9c2d-3e4f5a6b7c8d";
    let id = || ("edc-batch-id", text_value(batch));
    let size = |n: i64| ("edc-batch-size", AMQPValue::LongLongInt(n));

    // Act: a well-formed message of a batch of 3, then the very same message again; a message
    // whose batch id is not a UUID; one whose size is text; one of two forms in a batch.
    env.publish_with(&one_form("120"), batch_props("m-1", &[id(), size(3)]))
        .await;
    env.publish_with(&one_form("120"), batch_props("m-1", &[id(), size(3)]))
        .await;
    let not_uuid = [("edc-batch-id", text_value(planted)), size(3)];
    env.publish_with(&one_form("121"), batch_props("m-2", &not_uuid))
        .await;
    let text_size = [id(), ("edc-batch-size", text_value(planted))];
    env.publish_with(&one_form("122"), batch_props("m-3", &text_size))
        .await;
    let two = String::from_utf8(one_form("123")).unwrap().replace(
        "</SubjectData>",
        r#"</SubjectData><SubjectData SubjectKey="S-010"><SiteRef LocationOID="SITE.A"/>
           <StudyEventData StudyEventOID="SE.BASE"><FormData FormOID="F.DM"/></StudyEventData>
           </SubjectData>"#,
    );
    env.publish_with(two.as_bytes(), batch_props("m-4", &[id(), size(3)]))
        .await;
    daemon.wait_settled(5, WAIT).await;

    // Assert: the batch counts the stored form once (the second copy is its own redelivery), and
    // the two refusals that named it; the refusal without a UUID counts on no batch.
    let (expected, accepted, queried, duplicates, dead) = receipt(&env, batch).await;
    assert_eq!((expected, accepted, queried, duplicates), (3, 1, 0, 0));
    assert_eq!(dead, serde_json::json!({"invalid": 2}));
    let letters = env.drain_dlq().await;
    assert_eq!(letters.len(), 3);
    let reasons = env
        .db()
        .await
        .query(
            "SELECT message_id, batch_id::text, reason FROM rejections ORDER BY message_id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, Option<String>, String)> = reasons
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!((got[0].0.as_str(), got[0].1.as_deref()), ("m-2", None));
    assert!(got[0].2.contains("edc-batch-id is not a UUID"), "{got:?}");
    assert_eq!(got[1].1.as_deref(), Some(batch));
    assert!(
        got[1].2.contains("edc-batch-size is not an integer"),
        "{got:?}"
    );
    assert!(got[2].2.contains("holds 2 form instances"), "{got:?}");
    for letter in &letters {
        let headers = letter.properties.headers().as_ref().unwrap().inner();
        let error = match headers.get("x-edc-error") {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            other => panic!("a reason: {other:?}"),
        };
        assert!(
            error.contains("edc-batch") || error.contains("form instances"),
            "{error}"
        );
        assert!(
            !error.contains("Jane"),
            "no uploader value in a reason: {error}"
        );
    }
    assert!(got.iter().all(|(_, _, reason)| !reason.contains("Jane")));

    // Act: the refused message of two forms again, in another batch (an import run again).
    let other = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let again = [("edc-batch-id", text_value(other)), size(1)];
    env.publish_with(two.as_bytes(), batch_props("m-4", &again))
        .await;
    daemon.wait_settled(6, WAIT).await;

    // Assert: its refusal counts on the new batch too (one rejection per message and batch).
    let (expected, accepted, _, duplicates, dead) = receipt(&env, other).await;
    assert_eq!((expected, accepted, duplicates), (1, 0, 0));
    assert_eq!(dead, serde_json::json!({"invalid": 1}));

    // Act: the stored form removed, in a batch of its own.
    let removal = String::from_utf8(one_form("120")).unwrap().replace(
        r#"<FormData FormOID="F.VS">"#,
        r#"<FormData FormOID="F.VS" TransactionType="Remove">"#,
    );
    let third = "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e";
    let removed = [("edc-batch-id", text_value(third)), size(1)];
    env.publish_with(removal.as_bytes(), batch_props("m-5", &removed))
        .await;
    daemon.wait_settled(7, WAIT).await;

    // Assert: a version `removed` is stored, and counts on its receipt as accepted.
    let (expected, accepted, queried, duplicates, dead) = receipt(&env, third).await;
    assert_eq!((expected, accepted, queried, duplicates), (1, 1, 0, 0));
    assert_eq!(dead, serde_json::json!({}));
    let status = env
        .count("SELECT count(*) FROM crf_records WHERE subject = 'S-009' AND version = 2 AND status = 'removed'")
        .await;
    assert_eq!(status, 1);
    daemon.stop().await;
    env.cleanup().await;
}
