//! Pseudonym linkage through the daemon: a phone written in Arabic-Indic digits links to the same
//! phone written in ASCII, and identifiers that normalise to nothing ("unknown", "---") give no
//! pseudonym at all, so two patients who have them share none; their records are stored as
//! `queried` with a data query naming the field, never its value.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

/// A VS record of `patient`'s with its phone written as `phone`.
fn of(patient: &str, phone: &str) -> Value {
    let mut r = record(vs_items());
    if patient == "grace" {
        r["identifiers"] = json!({"full_name": "Grace Hopper", "birth_date": "1906-12-09",
            "national_id": "ZZ 98 76 54 A", "mrn": "MRN-112233",
            "address": "1 Navy Yard, Arlington", "email": "grace@example.org"});
    }
    r["identifiers"]["phone"] = json!(phone);
    r
}

#[tokio::test]
async fn unusable_identifiers_link_no_one_and_every_scripts_digits_link_the_same_phone() {
    // Arrange: Ada with her phone in ASCII, then in Arabic-Indic digits, then "unknown"; Grace,
    // another patient, with "---".
    let env = TestEnv::new().await;
    let records = [
        ("ascii", of("ada", "+44 20 7946 0000")),
        ("arabic", of("ada", "+٤٤ ٢٠ ٧٩٤٦ ٠٠٠٠")),
        ("ada-unknown", of("ada", "unknown")),
        ("grace-dashes", of("grace", "---")),
    ];
    let bodies: Vec<(String, Vec<u8>)> = records
        .iter()
        .map(|(id, r)| (id.to_string(), bytes(r)))
        .collect();
    env.publish(&bodies).await;

    // Act
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(4, WAIT).await;
    let summary = daemon.stop().await;

    // Assert
    assert_eq!((summary.accepted, summary.queried), (2, 2), "{summary}");
    let db = env.db().await;
    let stored = |name: &str| {
        let id = records.iter().find(|(n, _)| *n == name).unwrap().1["record_id"]
            .as_str()
            .unwrap()
            .parse::<uuid::Uuid>()
            .unwrap();
        let db = &db;
        async move {
            let row = db
                .query_one(
                    "SELECT status, pseudonyms FROM crf_records WHERE record_id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            let queries = db
                .query(
                    "SELECT check_id, message FROM data_queries WHERE record_id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .iter()
                .map(|q| (q.get::<_, String>(0), q.get::<_, String>(1)))
                .collect::<Vec<_>>();
            (row.get::<_, String>(0), row.get::<_, Value>(1), queries)
        }
    };
    let (status, ascii, queries) = stored("ascii").await;
    assert_eq!((status.as_str(), queries.len()), ("accepted", 0));
    let (status, arabic, _) = stored("arabic").await;
    assert_eq!(status, "accepted");
    assert_eq!(arabic["phone"], ascii["phone"], "one phone, one pseudonym");
    assert_eq!(arabic, ascii, "the same patient links on every identifier");

    let (status_a, unknown, queries_a) = stored("ada-unknown").await;
    let (status_g, dashes, queries_g) = stored("grace-dashes").await;
    for (status, pseudonyms, queries) in [
        (&status_a, &unknown, &queries_a),
        (&status_g, &dashes, &queries_g),
    ] {
        assert_eq!(status, "queried");
        assert!(pseudonyms.get("phone").is_none(), "{pseudonyms}");
        assert_eq!(queries.len(), 1, "{queries:?}");
        assert_eq!(queries[0].0, "identifiers.phone");
        assert!(
            queries[0].1.contains("phone") && !queries[0].1.contains("unknown"),
            "{}",
            queries[0].1
        );
    }
    let graces: Vec<&Value> = dashes.as_object().unwrap().values().collect();
    for (field, value) in unknown.as_object().unwrap() {
        assert!(
            !graces.contains(&value),
            "{field}: Ada and Grace share a pseudonym"
        );
    }
    // Ada's other identifiers still link her records.
    assert_eq!(unknown["national_id"], ascii["national_id"]);
    env.cleanup().await;
}
