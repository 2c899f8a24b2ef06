//! A document is refused whole: nothing of it is stored, and its dead letter keeps its body byte
//! for byte, with our reason naming the form. `amqp.require_user_id` refuses a message without an
//! AMQP `user_id`, JSON and ODM alike; a JSON record's audit row names its uploader too.

use lapin::message::BasicGetMessage;

use super::*;

/// Subject `key`'s vital signs with these items.
fn vs_of(key: &str, items: &str) -> String {
    vs_form("", "2026-11-20T08:30:00Z", "", items).replace("\"1001\"", &format!("\"{key}\""))
}

/// The dead letter of each body, in order of publication: its kind and reason headers.
fn dead(letters: &[BasicGetMessage], body: &[u8]) -> (String, String) {
    let m = letters
        .iter()
        .find(|m| m.delivery.data == body)
        .expect("a dead letter with the body byte for byte");
    (
        header(m, "x-edc-error-kind").unwrap_or_default(),
        header(m, "x-edc-error").unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_document_refused_whole_stores_nothing_and_is_dead_lettered_with_its_body() {
    let env = TestEnv::new().await;
    let good = r#"<ItemData ItemOID="I.PULSE" Value="70"/>"#;
    // Form 2 breaks a hard range: refused by validation, after form 1 was written in the same
    // transaction.
    let hard = document(
        "Snapshot",
        &format!(
            "{}\n{}",
            vs_of("1001", good),
            vs_of("1002", r#"<ItemData ItemOID="I.TEMP" Value="99"/>"#)
        ),
    );
    // Form 2 names a form the study does not have: refused by the mapping.
    let unknown = document(
        "Snapshot",
        &format!(
            "{}\n{}",
            vs_of("1003", good),
            vs_of("1004", good).replace("F.VS", "F.NOPE")
        ),
    );
    // A DOCTYPE: the document is refused by the XML reader.
    let doctype = String::from_utf8(document("Snapshot", &vs_of("1005", good)))
        .unwrap()
        .replace("<ODM ", "<!DOCTYPE ODM [<!ENTITY x \"y\">]>\n<ODM ")
        .into_bytes();
    // Over max_message_bytes (set to 4000 below), refused before it is read.
    let large = document(
        "Snapshot",
        &format!("<!-- {} -->\n{}", "x".repeat(4000), vs_of("1006", good)),
    );
    let empty = document("Snapshot", "");
    let bodies = [&hard, &unknown, &doctype, &large, &empty];
    for (i, body) in bodies.iter().enumerate() {
        env.publish_with(body, odm_props("application/xml", &format!("bad-{i}")))
            .await;
    }

    // Act
    let settings = odm_settings(&env, &[("EDC__MAX_MESSAGE_BYTES", "4000")]);
    let daemon = Daemon::start(settings);
    daemon.wait_settled(5, WAIT).await;
    daemon.stop().await;

    // Assert: nothing stored, five rejections, five dead letters with their bodies intact.
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM audit_trail").await, 0);
    assert_eq!(env.count("SELECT count(*) FROM rejections").await, 5);
    let letters = env.drain_dlq().await;
    assert_eq!(letters.len(), 5);
    let (kind, reason) = dead(&letters, &hard);
    assert_eq!(kind, "invalid");
    assert!(
        reason.starts_with("form 2 of the message: the form at line 17, column 9"),
        "{reason}"
    );
    assert!(
        reason.contains("I.TEMP") && !reason.contains("99"),
        "{reason}"
    );
    let (kind, reason) = dead(&letters, &unknown);
    assert_eq!(kind, "invalid");
    assert!(
        reason.contains("form 2 of the message") && reason.contains("F.NOPE"),
        "{reason}"
    );
    let (kind, reason) = dead(&letters, &doctype);
    assert_eq!(kind, "malformed");
    assert!(reason.contains("line 2"), "{reason}");
    assert_eq!(dead(&letters, &large).0, "too_large");
    let (kind, reason) = dead(&letters, &empty);
    assert_eq!(kind, "invalid");
    assert!(reason.contains("no form instance"), "{reason}");
    env.cleanup().await;
}

#[tokio::test]
async fn require_user_id_refuses_a_message_without_one_and_a_json_audit_row_names_its_uploader() {
    let env = TestEnv::new().await;
    let json = bytes(&record(vs_items()));
    let json_by_guest = bytes(&record(vs_items()));
    let odm = document(
        "Snapshot",
        &vs_of("1001", r#"<ItemData ItemOID="I.PULSE" Value="70"/>"#),
    );
    env.publish(&[("json-anonymous", json.clone())]).await;
    let as_json = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from("json-guest"))
        .with_user_id(ShortString::from("guest"));
    env.publish_with(&json_by_guest, as_json).await;
    let anonymous_odm = BasicProperties::default()
        .with_content_type(ShortString::from("application/xml"))
        .with_message_id(ShortString::from("odm-anonymous"));
    env.publish_with(&odm, anonymous_odm).await;

    // Act: the demonstration study, user_id required.
    let daemon = Daemon::start(env.settings(&[("EDC__AMQP__REQUIRE_USER_ID", "true")]));
    daemon.wait_settled(3, WAIT).await;
    daemon.stop().await;

    // Assert: the record with a user_id stored, its audit row naming it; the others refused.
    let db = env.db().await;
    let rows = db
        .query("SELECT uploaded_by, actor FROM audit_trail", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let by: Option<String> = rows[0].get(0);
    assert_eq!(by.as_deref(), Some("guest"));
    assert_eq!(
        rows[0].get::<_, String>(1),
        "crc-17",
        "entered_by stays the actor"
    );
    let letters = env.drain_dlq().await;
    assert_eq!(letters.len(), 2);
    for body in [&json, &odm] {
        let (kind, reason) = dead(&letters, body);
        assert_eq!(kind, "invalid");
        assert!(reason.contains("amqp.require_user_id"), "{reason}");
    }
    env.cleanup().await;
}
