//! The daemon's ODM path: a message of CDISC ODM XML (content type `application/xml` or
//! `application/vnd.cdisc.odm+xml`) stores each of its form instances as a record, all in one
//! transaction or none; a correction is a new version decided against the latest stored one; the
//! authenticated uploader is on every audit row; `item_values` shows the latest values, one row
//! each. Study ST.STORE (tests/data/odm/store) and hand-written documents.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::ShortString;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// The settings of a daemon that knows study ST.STORE only.
fn odm_settings(env: &TestEnv, extra: &[(&str, &str)]) -> edc_ingest::config::Settings {
    let studies = repo().join("tests/data/odm/store").display().to_string();
    let mut all = vec![("EDC__STUDIES_DIR", studies.as_str())];
    all.extend_from_slice(extra);
    env.settings(&all)
}

/// An ODM message's properties: the content type given, a message id, the broker's user.
fn odm_props(content_type: &str, id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from(content_type))
        .with_message_id(ShortString::from(id))
        .with_user_id(ShortString::from("guest"))
}

/// A document of study ST.STORE: `subjects` is the SubjectData elements, as written.
fn document(file_type: &str, subjects: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" ODMVersion="1.3.2" FileType="{file_type}"
     FileOID="F.1" CreationDateTime="2026-11-20T09:00:00Z">
  <ClinicalData StudyOID="ST.STORE" MetaDataVersionOID="MDV.1">
{subjects}
  </ClinicalData>
</ODM>
"#
    )
    .into_bytes()
}

/// Vital signs of subject 1001 at screening, captured by U.NURSE at `at`, with these items.
fn vs_form(tx: &str, at: &str, reason: &str, items: &str) -> String {
    let reason = match reason {
        "" => String::new(),
        r => format!("<ReasonForChange>{r}</ReasonForChange>"),
    };
    format!(
        r#"    <SubjectData SubjectKey="1001">
      <SiteRef LocationOID="SITE.02"/>
      <StudyEventData StudyEventOID="SE.SCREEN">
        <FormData FormOID="F.VS" {tx}>
          <AuditRecord><UserRef UserOID="U.NURSE"/><DateTimeStamp>{at}</DateTimeStamp>{reason}</AuditRecord>
          <ItemGroupData ItemGroupOID="IG.VS">{items}</ItemGroupData>
        </FormData>
      </StudyEventData>
    </SubjectData>"#
    )
}

/// Two forms: vital signs at screening and an adverse event log of two rows at week 1.
fn two_forms() -> Vec<u8> {
    let vs = vs_form(
        "",
        "2026-11-20T08:30:00+01:00",
        "",
        r#"<ItemData ItemOID="I.VSDAT" Value="2026-11-20"/><ItemData ItemOID="I.PULSE" Value="072"/>
           <ItemData ItemOID="I.TEMP" Value="36.80"/><ItemData ItemOID="I.INIT" Value="ADA"/>"#,
    );
    let ae = r#"    <SubjectData SubjectKey="1001">
      <SiteRef LocationOID="SITE.02"/>
      <StudyEventData StudyEventOID="SE.WEEK1" StudyEventRepeatKey="2">
        <FormData FormOID="F.AE">
          <ItemGroupData ItemGroupOID="IG.AE"><ItemData ItemOID="I.AEYN" Value="1"/></ItemGroupData>
          <ItemGroupData ItemGroupOID="IG.AELOG" ItemGroupRepeatKey="1">
            <ItemData ItemOID="I.AETERM" Value="Headache"/><ItemData ItemOID="I.AESEV" Value="2"/>
          </ItemGroupData>
          <ItemGroupData ItemGroupOID="IG.AELOG" ItemGroupRepeatKey="2">
            <ItemData ItemOID="I.AETERM" Value="Nausea"/>
          </ItemGroupData>
        </FormData>
      </StudyEventData>
    </SubjectData>"#;
    document("Snapshot", &format!("{vs}\n{ae}"))
}

/// `item_values` of the test's database, ordered: (form, visit_repeat, item_group, group_repeat,
/// item, value), with `status` and `version` checked separately.
async fn item_values(env: &TestEnv) -> Vec<[Option<String>; 6]> {
    let rows = env
        .db()
        .await
        .query(
            "SELECT form, visit_repeat, item_group, group_repeat, item, value FROM item_values \
             ORDER BY form, item_group NULLS FIRST, group_repeat, item",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| std::array::from_fn(|i| r.get::<_, Option<String>>(i)))
        .collect()
}

fn row(v: [&str; 6]) -> [Option<String>; 6] {
    v.map(|s| (s != "-").then(|| s.to_string()))
}

#[tokio::test]
async fn a_message_of_two_forms_is_two_records_and_the_same_message_again_stores_nothing() {
    let env = TestEnv::new().await;
    let daemon = Daemon::start(odm_settings(&env, &[]));

    // Act: the document, then the same document again under another message id.
    // Both ask for answers.
    let replies = format!("edc.reply.t{}", env.suffix);
    env.declare_queue(&replies).await;
    let answered = |props: BasicProperties| {
        props
            .with_reply_to(ShortString::from(replies.as_str()))
            .with_correlation_id(ShortString::from("c-odm"))
    };
    let ct = "application/vnd.cdisc.odm+xml; charset=UTF-8";
    env.publish_with(&two_forms(), answered(odm_props(ct, "odm-1")))
        .await;
    daemon.wait_settled(1, WAIT).await;
    let again = answered(odm_props("Application/XML", "odm-2"));
    env.publish_with(&two_forms(), again).await;
    daemon.wait_settled(2, WAIT).await;

    // Assert: one answer per version stored, then one `duplicate` for the message that stored none.
    let mut outcomes: Vec<String> = Vec::new();
    for _ in 0..100 {
        for m in env.drain(&replies).await {
            let answer: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
            let id = answer["message_id"].as_str().unwrap_or_default();
            outcomes.push(format!(
                "{id} {}",
                answer["outcome"].as_str().unwrap_or_default()
            ));
        }
        if outcomes.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["odm-1 accepted", "odm-1 accepted", "odm-2 duplicate"]
    );
    let summary = daemon.stop().await;

    // Assert: two records of version 1, from ODM, with their repeat keys; nothing more.
    let db = env.db().await;
    let records = db
        .query(
            "SELECT concat_ws(' ', form, version, status, source, site, visit, visit_repeat, \
                    form_repeat, entered_by, captured_at = '2026-11-20T07:30:00Z'::timestamptz) \
             FROM crf_records ORDER BY form",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<String> = records.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        got,
        [
            "F.AE 1 accepted odm SITE.02 SE.WEEK1 2 1 unknown f",
            "F.VS 1 accepted odm SITE.02 SE.SCREEN 1 1 U.NURSE t",
        ],
        "two records, the second message stored nothing"
    );
    assert_eq!(summary.duplicate, 1, "the second message is a duplicate");

    // Assert: the uploader RabbitMQ authenticated is on both audit rows.
    let audit = env
        .count("SELECT count(*) FROM audit_trail WHERE uploaded_by = 'guest'")
        .await;
    assert_eq!(audit, 2);

    // Assert: item_values holds the file's values, canonical; the phi item as its pseudonym.
    let values = item_values(&env).await;
    let initials = values.iter().find(|v| v[4].as_deref() == Some("I.INIT"));
    let initials = initials.and_then(|v| v[5].clone()).unwrap_or_default();
    assert!(
        initials.starts_with("psn:") && !initials.contains("ADA"),
        "{initials}"
    );
    assert_eq!(
        values,
        vec![
            row(["F.AE", "2", "-", "-", "I.AEYN", "true"]),
            row(["F.AE", "2", "IG.AELOG", "1", "I.AESEV", "2"]),
            row(["F.AE", "2", "IG.AELOG", "1", "I.AETERM", "Headache"]),
            row(["F.AE", "2", "IG.AELOG", "2", "I.AETERM", "Nausea"]),
            row(["F.VS", "1", "-", "-", "I.INIT", &initials]),
            row(["F.VS", "1", "-", "-", "I.PULSE", "72"]),
            row(["F.VS", "1", "-", "-", "I.TEMP", "36.8"]),
            row(["F.VS", "1", "-", "-", "I.VSDAT", "2026-11-20"]),
        ]
    );
    env.cleanup().await;
}

mod corrections;
mod mixed;
mod refusals;
