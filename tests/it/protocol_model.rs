//! The protocol model's new parts through the daemon, with the shipped example study DEMO-002:
//! repeating groups stored in their canonical form, a partial-date check that cannot be decided,
//! a hard check; and the canonical text of a value as PostgreSQL prints the stored `jsonb`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// A DEMO-002 record of `form` with `items`.
fn demo2(form: &str, items: Value) -> Value {
    let mut r = record(items);
    r["study"] = json!("DEMO-002");
    r["site"] = json!("SITE-01");
    r["subject"] = json!("DEMO-002-01-0007");
    r["visit"] = json!("SE.BASELINE");
    r["form"] = json!(form);
    r
}

fn ae_row(start: &str, end: Option<&str>, serious: bool) -> Value {
    let mut row = json!({"I.AETERM": "Headache after the party", "I.AESTDAT": start,
        "I.AESER": serious, "I.AESEV": "02"});
    if let Some(e) = end {
        row["I.AEENDAT"] = json!(e);
    }
    row
}

#[tokio::test]
async fn a_record_with_a_group_is_stored_with_its_rows_in_canonical_form() {
    // Arrange: rows sent as an array, one of them serious
    let env = TestEnv::new().await;
    let daemon = Daemon::start(env.settings(&[]));
    let rec = demo2(
        "F.AE",
        json!({"I.AEYN": true, "IG.AELOG": [ae_row("2024-03", Some("2024-04-02"), false),
            ae_row("2024", None, true)]}),
    );

    // Act
    env.publish(&[("ae", bytes(&rec))]).await;
    daemon.wait_settled(1, WAIT).await;
    let summary = daemon.stop().await;

    // Assert: stored accepted, the rows as an object by repeat key, values canonical, phi pseudonymised
    assert_eq!(summary.accepted, 1, "{summary}");
    let row = env
        .db()
        .await
        .query_one("SELECT status, items FROM crf_records", &[])
        .await
        .unwrap();
    let (status, items): (String, Value) = (row.get(0), row.get(1));
    assert_eq!(status, "accepted");
    let log = items["IG.AELOG"].as_object().unwrap();
    assert_eq!(log.keys().collect::<Vec<_>>(), vec!["1", "2"]);
    assert_eq!(log["1"]["I.AESEV"], json!("2"), "integer code, canonical");
    assert_eq!(log["1"]["I.AESTDAT"], json!("2024-03"));
    assert_eq!(log["2"]["I.AESER"], json!(true));
    let term = log["1"]["I.AETERM"].as_str().unwrap();
    assert!(term.starts_with("psn:"), "{term}");
    assert_eq!(log["2"]["I.AETERM"], json!(term), "the same term links");
    assert!(!items.to_string().contains("Headache"));
    assert_eq!(items["I.AEYN"], json!(true));
    assert_eq!(
        env.count("SELECT count(*) FROM alerts WHERE alert_id = 'SAE'")
            .await,
        1,
        "a serious row raises the alert"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_partial_date_check_that_cannot_be_decided_raises_its_query() {
    // Arrange: the end date falls inside the month the start date names
    let env = TestEnv::new().await;
    let daemon = Daemon::start(env.settings(&[]));
    let rec = demo2(
        "F.AE",
        json!({"I.AEYN": true, "IG.AELOG": {"1": ae_row("2024-03", Some("2024-03-15"), false)}}),
    );

    // Act
    env.publish(&[("ae", bytes(&rec))]).await;
    daemon.wait_settled(1, WAIT).await;
    let summary = daemon.stop().await;

    // Assert: stored as queried, with one open query for AE01 saying why
    assert_eq!(summary.queried, 1, "{summary}");
    let rows = env
        .db()
        .await
        .query("SELECT check_id, message, status FROM data_queries", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let (check, message, status): (String, String, String) =
        (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert_eq!((check.as_str(), status.as_str()), ("AE01", "open"));
    assert_eq!(
        message,
        "IG.AELOG row 1: check AE01 could not be decided: I.AESTDAT is a partial value whose span \
         overlaps I.AEENDAT; please review: End date must not be before start date"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_failing_hard_check_refuses_the_record_with_one_rejections_row() {
    // Arrange: the infusion ends before it starts
    let env = TestEnv::new().await;
    let daemon = Daemon::start(env.settings(&[]));
    let rec = demo2(
        "F.EX",
        json!({"I.EXSTDTC": "2024-03-01T10:00+01:00", "I.EXENDTC": "2024-03-01T08:30Z",
            "I.EXTPT": "10:00"}),
    );

    // Act
    env.publish(&[("ex", bytes(&rec))]).await;
    daemon.wait_settled(1, WAIT).await;
    let summary = daemon.stop().await;

    // Assert: nothing stored, one rejection, the dead letter says why in the protocol's words
    assert_eq!(summary.dead_lettered_total(), 1, "{summary}");
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 0);
    let rows = env
        .db()
        .await
        .query("SELECT kind, reason FROM rejections", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let expect = "check EX01 failed: The infusion cannot end before it starts";
    assert_eq!(
        (rows[0].get::<_, String>(0), rows[0].get::<_, String>(1)),
        ("invalid".to_string(), expect.to_string())
    );
    let dead = env.drain_dlq().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "x-edc-error").as_deref(), Some(expect));
    assert_eq!(
        dead[0].delivery.data,
        bytes(&rec),
        "body kept byte for byte"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn the_canonical_text_of_a_value_is_what_postgresql_prints_for_it_stored() {
    use edc_ingest::protocol::value::{from_json, stored_text};
    use edc_ingest::protocol::{Item, ItemType};
    let env = TestEnv::new().await;
    let db = env.db().await;
    let decimal = Item {
        kind: ItemType::Decimal,
        ..Item::default()
    };
    let values = [
        json!(36.8),
        json!(37.0),
        json!(1e16),
        json!(1e20),
        json!(1.5e-7),
        json!(-2.5e-10),
        json!(123456789012345678u64),
        json!(18446744073709551615u64),
        json!(0.1),
        json!(1.7976931348623157e308),
        json!(5e-324),
    ];
    for v in values {
        let canonical = from_json(&decimal, &v).unwrap();
        let shown: String = db
            .query_one("SELECT $1::jsonb #>> '{}'", &[&canonical])
            .await
            .unwrap()
            .get(0);
        assert_eq!(Some(shown), stored_text(&canonical), "{v}");
    }
    for v in [
        json!(true),
        json!("2024-03"),
        json!("08:30:00Z"),
        json!("psn:ab"),
    ] {
        let shown: String = db
            .query_one("SELECT $1::jsonb #>> '{}'", &[&v])
            .await
            .unwrap()
            .get(0);
        assert_eq!(Some(shown), stored_text(&v), "{v}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn check_config_prints_the_cel_names_of_a_form_and_refuses_an_unknown_one() {
    let env = TestEnv::new().await;
    let out = edc(&env, &[], &["check-config", "--cel-names", "F.AE"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "  DEMO-002 v1.0 form F.AE item I.AEYN -> I_AEYN",
        "  DEMO-002 v1.0 form F.AE group IG.AELOG item I.AESTDAT -> I_AESTDAT",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line}: {stdout}");
    }
    let out = edc(&env, &[], &["check-config", "--cel-names", "NO\u{1b}[2JPE"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no study protocol has a form NO\\u{1b}[2JPE"),
        "{}",
        text(&out)
    );
    env.cleanup().await;
}
