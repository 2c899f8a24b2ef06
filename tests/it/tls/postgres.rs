//! TLS to PostgreSQL: what each `sslmode` checks, client certificates, and a database that refuses
//! the TLS settings stopping the start.

use std::time::Instant;

use super::*;

#[tokio::test]
async fn postgres_over_tls_checks_what_each_sslmode_asks_for() {
    let env = TestEnv::new().await;
    let certs = Certs::new();
    let ca = path(&servers_ca());
    let other = path(&certs.other_ca());
    let with_ca = env.settings(&[("EDC__POSTGRES__TLS__CA_FILE", ca.as_str())]);
    let with_other = env.settings(&[("EDC__POSTGRES__TLS__CA_FILE", other.as_str())]);
    let none = env.settings(&[]);
    let at = |host: &str, mode: &str| {
        with_host(
            &env.db_url,
            host,
            &if mode.is_empty() {
                String::new()
            } else {
                format!("sslmode={mode}")
            },
        )
    };

    // verify-full: the chain and the name. The certificate names localhost only.
    assert_eq!(
        session(&with_ca, &at("localhost", "verify-full"))
            .await
            .unwrap(),
        (true, "edc".into())
    );
    let why = refused(
        session(&with_ca, &at("127.0.0.1", "verify-full")).await,
        "wrong host name",
    );
    assert!(why.contains("certificate") && why.contains("name"), "{why}");
    let why = refused(
        session(&with_other, &at("localhost", "verify-full")).await,
        "wrong CA",
    );
    assert!(why.contains("UnknownIssuer"), "{why}");
    // verify-ca: the chain, any name.
    assert!(
        session(&with_ca, &at("127.0.0.1", "verify-ca"))
            .await
            .unwrap()
            .0
    );
    refused(
        session(&with_other, &at("127.0.0.1", "verify-ca")).await,
        "verify-ca, wrong CA",
    );
    // require: encrypted, unchecked without a CA; with one, the chain is checked (libpq's rule).
    assert!(session(&none, &at("127.0.0.1", "require")).await.unwrap().0);
    refused(
        session(&with_other, &at("127.0.0.1", "require")).await,
        "require with a CA file",
    );
    // prefer, the default on this machine without a CA: TLS when the server offers it. disable:
    // never.
    assert!(session(&none, &at("127.0.0.1", "")).await.unwrap().0);
    assert!(session(&none, &at("127.0.0.1", "prefer")).await.unwrap().0);
    assert!(
        !session(&with_ca, &at("127.0.0.1", "disable"))
            .await
            .unwrap()
            .0
    );
    // A URL's sslrootcert wins over postgres.tls.ca_file, and verify-full without any CA is refused.
    let own = with_host(
        &env.db_url,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert!(session(&with_other, &own).await.unwrap().0);
    let why = refused(
        session(&none, &at("localhost", "verify-full")).await,
        "no CA",
    );
    assert!(why.contains("postgres.tls.ca_file"), "{why}");
    // A server without TLS under require is refused, not waited for.
    let port = server_without_tls().await;
    let mut plain = url::Url::parse(&env.db_url).unwrap();
    plain.set_port(Some(port)).unwrap();
    plain.set_query(Some("sslmode=require"));
    let why = refused(session(&none, plain.as_str()).await, "no TLS under require");
    assert!(why.contains("server does not support TLS"), "{why}");
    plain.set_query(Some("sslmode=prefer"));
    assert!(matches!(
        session(&none, plain.as_str()).await,
        Err(ConnectError::Unreachable { .. })
    ));
    env.cleanup().await;
}

#[tokio::test]
async fn a_client_certificate_logs_in_to_postgres() {
    let env = TestEnv::new().await;
    let certs = Certs::new();
    let (cert, key) = certs.client("edc_cert");
    let ca = path(&servers_ca());
    let url = {
        let mut u =
            url::Url::parse(&with_host(&env.db_url, "localhost", "sslmode=verify-full")).unwrap();
        u.set_username("edc_cert").unwrap();
        u.set_password(None).unwrap();
        u.to_string()
    };
    let with_cert = env.settings(&[
        ("EDC__POSTGRES__TLS__CA_FILE", ca.as_str()),
        ("EDC__POSTGRES__TLS__CERT_FILE", &path(&cert)),
        ("EDC__POSTGRES__TLS__KEY_FILE", &path(&key)),
    ]);
    assert_eq!(
        session(&with_cert, &url).await.unwrap(),
        (true, "edc_cert".into())
    );
    // Without it, pg_hba.conf refuses the role: for good.
    let without = env.settings(&[("EDC__POSTGRES__TLS__CA_FILE", ca.as_str())]);
    let why = refused(session(&without, &url).await, "no client certificate");
    assert!(why.contains("28000"), "{why}");
    // A certificate for another name is refused too.
    let (cert, key) = certs.client("someone_else");
    let other = env.settings(&[
        ("EDC__POSTGRES__TLS__CA_FILE", ca.as_str()),
        ("EDC__POSTGRES__TLS__CERT_FILE", &path(&cert)),
        ("EDC__POSTGRES__TLS__KEY_FILE", &path(&key)),
    ]);
    refused(session(&other, &url).await, "certificate for another role");
    env.cleanup().await;
}

#[tokio::test]
async fn a_database_that_refuses_the_tls_settings_stops_run_and_migrate_at_once() {
    let env = TestEnv::new().await;
    let certs = Certs::new();
    let other = path(&certs.other_ca());
    let ca = path(&servers_ca());
    let port = server_without_tls().await;
    let mut plain = url::Url::parse(&env.db_url).unwrap();
    plain.set_port(Some(port)).unwrap();
    plain.set_query(Some("sslmode=require"));
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        (
            "a CA that did not sign the server's certificate",
            vec![
                (
                    "EDC__POSTGRES__URL",
                    with_host(&env.db_url, "localhost", "sslmode=verify-full"),
                ),
                ("EDC__POSTGRES__TLS__CA_FILE", other.clone()),
            ],
        ),
        (
            "a host name the certificate does not name",
            vec![
                (
                    "EDC__POSTGRES__URL",
                    with_host(&env.db_url, "127.0.0.1", "sslmode=verify-full"),
                ),
                ("EDC__POSTGRES__TLS__CA_FILE", ca.clone()),
            ],
        ),
        (
            "a server without TLS under require",
            vec![("EDC__POSTGRES__URL", plain.to_string())],
        ),
        (
            "verify-full without a CA",
            vec![(
                "EDC__POSTGRES__URL",
                with_host(&env.db_url, "localhost", "sslmode=verify-full"),
            )],
        ),
        (
            "a server over the network with neither sslmode nor a CA",
            vec![(
                "EDC__POSTGRES__URL",
                with_host(&env.db_url, "db.example.invalid", ""),
            )],
        ),
    ];
    for (case, vars) in cases {
        for command in ["run", "migrate"] {
            let extra: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let started = Instant::now();
            let out = tokio::task::spawn_blocking({
                let process = launch(&env, &extra).args([command]).spawn();
                move || process.output_within(COMMAND_WAIT)
            })
            .await
            .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{case}, {command}: {err}");
            assert!(
                err.contains("refused the connection"),
                "{case}, {command}: {err}"
            );
            assert!(
                !err.contains(":edc@"),
                "{case}, {command}: the password shows: {err}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{case}, {command}: no retrying ({:?})",
                started.elapsed()
            );
        }
    }
    env.cleanup().await;
}
