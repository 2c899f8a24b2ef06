//! `edc-ingest status` over TLS, against the local servers with TLS on (`scripts/services.sh`
//! makes their CA and a certificate for `localhost`): the broker over `amqps://`, PostgreSQL with
//! `sslmode=verify-full` and the CA. Both are read; with a CA that did not sign the servers'
//! certificates, neither is, and the command says so and exits 1.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn queue_of(s: &Value, role: &str) -> Value {
    s["broker"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["role"] == json!(role))
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn status_reads_the_broker_over_amqps_and_the_database_over_verified_tls() {
    // Arrange: one record stored and one dead-lettered (over plain connections), then three
    // waiting.
    let env = TestEnv::new().await;
    let mut invalid = record(vs_items());
    invalid["form"] = json!("NOPE");
    env.publish(&[
        ("good", bytes(&record(vs_items()))),
        ("bad", bytes(&invalid)),
    ])
    .await;
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(2, WAIT).await;
    daemon.stop().await;
    env.publish_lines(&generated(3, 5, 0.0, 0.0)).await;
    wait_for("3 messages waiting", WAIT, || async {
        env.ready(&env.queue).await == 3
    })
    .await;

    let ca = tls_dir().join("ca.pem").display().to_string();
    let mut pg = url::Url::parse(&env.db_url).unwrap();
    pg.set_host(Some("localhost")).unwrap();
    pg.set_query(Some("sslmode=verify-full"));
    let pg = pg.to_string();
    let amqps = amqps_url();
    let over_tls = |amqp_ca: &str, pg_ca: &str| {
        edc(
            &env,
            &[
                ("EDC__AMQP__URL", amqps.as_str()),
                ("EDC__AMQP__TLS__CA_FILE", amqp_ca),
                ("EDC__POSTGRES__URL", pg.as_str()),
                ("EDC__POSTGRES__TLS__CA_FILE", pg_ca),
            ],
            &["status", "--window", "0s", "--output", "json"],
        )
    };

    // Act + Assert: the servers' CA, both read over TLS.
    let out = over_tls(&ca, &ca);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let s = json_of(&out);
    assert_eq!(s["broker"]["answered"], json!(true), "{s}");
    assert_eq!(queue_of(&s, "work")["ready"], json!(3), "{s}");
    assert_eq!(queue_of(&s, "dead_letter")["ready"], json!(1), "{s}");
    assert_eq!(s["database"]["answered"], json!(true), "{s}");
    let kinds = s["database"]["dead_letters_by_kind"].as_array().unwrap();
    assert!(
        kinds.contains(&json!({"kind": "invalid", "last_hour": 1, "last_day": 1})),
        "{s}"
    );
    assert!(!err.contains("guest:guest"), "{err}");

    // A CA that signed neither certificate: neither server is trusted, so neither is read.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&other, params.self_signed(&key).unwrap().pem()).unwrap();
    let other = other.display().to_string();
    let out = over_tls(&other, &other);
    assert_eq!(out.status.code(), Some(1));
    let s = json_of(&out);
    assert_eq!(s["broker"]["answered"], json!(false), "{s}");
    assert_eq!(s["database"]["answered"], json!(false), "{s}");
    let errors = format!("{} {}", s["broker"]["error"], s["database"]["error"]);
    assert!(errors.matches("UnknownIssuer").count() == 2, "{errors}");
    env.cleanup().await;
}
