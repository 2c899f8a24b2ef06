//! TLS to RabbitMQ (`amqps://`, client certificates and EXTERNAL), and the daemon over TLS to both
//! servers.

use super::*;

/// Creates a broker user without a password (it logs in with its certificate) that may do
/// anything in the default vhost; deleted by [`drop_broker_user`].
fn broker_user(name: &str) {
    let (status, body) = management_request(
        "PUT",
        &format!("/api/users/{name}"),
        Some(&serde_json::json!({"password_hash": "", "tags": ""})),
    );
    assert!(status.contains(" 20"), "{status} {body}");
    let (status, body) = management_request(
        "PUT",
        &format!("/api/permissions/%2f/{name}"),
        Some(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
    );
    assert!(status.contains(" 20"), "{status} {body}");
}

fn drop_broker_user(name: &str) {
    management_request("DELETE", &format!("/api/users/{name}"), None);
}

/// The broker's view of the connections named `name`.
fn broker_connections(name: &str) -> Vec<serde_json::Value> {
    management("/api/connections")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["client_properties"]["connection_name"].as_str() == Some(name))
        .collect()
}

#[tokio::test]
async fn amqps_checks_the_broker_certificate_and_logs_in_with_external() {
    let env = TestEnv::new().await;
    let certs = Certs::new();
    let ca = path(&servers_ca());
    let other = path(&certs.other_ca());
    let connect = |vars: Vec<(&'static str, String)>| {
        let mut all = vec![("EDC__AMQP__URL", amqps_url())];
        all.extend(vars);
        let extra: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let settings = env.settings(&extra);
        async move {
            edc_ingest::broker::connect(&settings.amqp, 0, "edc-ingest tls test", WAIT)
                .await
                .map(|(conn, _)| conn)
        }
    };

    // The servers' CA, the host name of the certificate: connected, with a password.
    let conn = connect(vec![("EDC__AMQP__TLS__CA_FILE", ca.clone())])
        .await
        .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    // The wrong CA, or the right CA and another host name: refused.
    let e = connect(vec![("EDC__AMQP__TLS__CA_FILE", other.clone())])
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    let by_ip = amqps_url().replace("@localhost:", "@127.0.0.1:");
    let e = connect(vec![
        ("EDC__AMQP__URL", by_ip),
        ("EDC__AMQP__TLS__CA_FILE", ca.clone()),
    ])
    .await
    .err()
    .unwrap();
    assert!(e.to_string().contains("not valid for name"), "{e}");

    // A client certificate: SASL EXTERNAL, the user named by the certificate, no password sent.
    let user = format!("edc-tls-{}", env.suffix);
    broker_user(&user);
    let (cert, key) = certs.client(&user);
    let no_password = amqps_url().replace("guest:guest@", "nobody:wrong@");
    let conn = connect(vec![
        ("EDC__AMQP__URL", no_password.clone()),
        ("EDC__AMQP__TLS__CA_FILE", ca.clone()),
        ("EDC__AMQP__TLS__CERT_FILE", path(&cert)),
        ("EDC__AMQP__TLS__KEY_FILE", path(&key)),
    ])
    .await
    .unwrap();
    let mut seen = Vec::new();
    // The management API can still list this test's earlier connections (same name, PLAIN) for a
    // moment after they closed: the one wanted is the certificate's user's (the URL's user is
    // `nobody`, so only the certificate can have named it).
    wait_for("the broker lists the connection", WAIT, || {
        seen = broker_connections("edc-ingest tls test");
        seen.retain(|c| c["user"].as_str() == Some(user.as_str()));
        let found = !seen.is_empty();
        async move { found }
    })
    .await;
    assert_eq!(
        seen[0]["auth_mechanism"].as_str(),
        Some("EXTERNAL"),
        "{:#}",
        seen[0]
    );
    assert_eq!(seen[0]["ssl"].as_bool(), Some(true));
    conn.close(200, "bye".into()).await.unwrap();
    // The first of two nodes is down: the second, over TLS, is taken.
    let two = format!("amqps://nobody:wrong@localhost:1/%2f,{no_password}");
    let conn = connect(vec![
        ("EDC__AMQP__URL", two),
        ("EDC__AMQP__TLS__CA_FILE", ca.clone()),
        ("EDC__AMQP__TLS__CERT_FILE", path(&cert)),
        ("EDC__AMQP__TLS__KEY_FILE", path(&key)),
    ])
    .await
    .unwrap();
    conn.close(200, "bye".into()).await.unwrap();
    drop_broker_user(&user);
    env.cleanup().await;
}

#[tokio::test]
async fn the_daemon_runs_over_tls_to_both_servers_with_client_certificates() {
    // Arrange: PostgreSQL as edc_cert (the runtime role, logged in by its certificate) with
    // verify-full; migrations as the owner, verify-full too; the broker over amqps with EXTERNAL.
    let env = TestEnv::new().await;
    let certs = Certs::new();
    let ca = path(&servers_ca());
    let (pg_cert, pg_key) = certs.client("edc_cert");
    let user = format!("edc-tls-{}", env.suffix);
    broker_user(&user);
    let (amqp_cert, amqp_key) = certs.client(&user);
    let runtime = {
        let mut u =
            url::Url::parse(&with_host(&env.db_url, "localhost", "sslmode=verify-full")).unwrap();
        u.set_username("edc_cert").unwrap();
        u.set_password(None).unwrap();
        u.to_string()
    };
    let owner = with_host(&env.db_url, "localhost", "sslmode=verify-full");
    let amqps = amqps_url().replace("guest:guest@", "");
    let vars = [
        ("EDC__POSTGRES__URL", runtime.as_str()),
        ("EDC__POSTGRES__MIGRATE_URL", owner.as_str()),
        ("EDC__POSTGRES__TLS__CA_FILE", ca.as_str()),
        ("EDC__POSTGRES__TLS__CERT_FILE", &path(&pg_cert)),
        ("EDC__POSTGRES__TLS__KEY_FILE", &path(&pg_key)),
        ("EDC__AMQP__URL", amqps.as_str()),
        ("EDC__AMQP__TLS__CA_FILE", ca.as_str()),
        ("EDC__AMQP__TLS__CERT_FILE", &path(&amqp_cert)),
        ("EDC__AMQP__TLS__KEY_FILE", &path(&amqp_key)),
    ];
    let bodies: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("tls-{i}"), bytes(&record(vs_items()))))
        .collect();
    env.publish(&bodies).await;

    // Act
    let daemon = Daemon::start(env.settings(&vars));
    daemon.wait_settled(20, WAIT).await;

    // Assert: stored, over TLS as the certificate's role, and the broker saw EXTERNAL over TLS.
    // (Only a session's own role, or a superuser, sees its pg_stat_ssl row.)
    let settings = env.settings(&vars);
    let db = store::connect(
        &edc_ingest::config::SecretUrl::new(runtime.as_str()),
        &settings.postgres,
    )
    .await
    .unwrap();
    let tls_sessions: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND a.usename = 'edc_cert' AND s.ssl",
            &[&env.db_name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(tls_sessions > 0, "the daemon's sessions use TLS");
    let plain_sessions: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND a.usename = 'edc_cert' AND NOT s.ssl",
            &[&env.db_name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain_sessions, 0);
    db.close().await;
    let of_user = || -> Vec<serde_json::Value> {
        management("/api/connections")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["user"].as_str() == Some(user.as_str()))
            .collect()
    };
    // The management API's list lags the broker by a few seconds.
    wait_for("the broker lists the daemon's connections", WAIT, || {
        let found = !of_user().is_empty();
        async move { found }
    })
    .await;
    let connections = of_user();
    for c in &connections {
        assert_eq!(c["ssl"].as_bool(), Some(true), "{c:#}");
        assert_eq!(c["auth_mechanism"].as_str(), Some("EXTERNAL"), "{c:#}");
    }
    let summary = daemon.stop().await;
    assert_eq!(summary.settled(), 20, "{summary}");
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 20);
    drop_broker_user(&user);
    env.cleanup().await;
}
