//! TLS to PostgreSQL and RabbitMQ, against the local servers with TLS on (`scripts/services.sh`
//! makes their throwaway CA and a certificate that names `localhost` only). The tests make the rest
//! themselves: a CA of their own (the wrong CA), and client certificates signed by the servers' CA.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edc_ingest::config::Settings;
use edc_ingest::store::{self, ConnectError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

/// Certificates a test writes into a folder of its own.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        Certs {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, pem: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A CA of the test's own, which signed nothing the servers present.
    fn other_ca(&self) -> PathBuf {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "a CA nobody trusts");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        self.write("other-ca.pem", &cert.pem(), 0o644)
    }

    /// A client certificate for `common_name`, signed by the servers' CA: (certificate, key).
    fn client(&self, common_name: &str) -> (PathBuf, PathBuf) {
        let ca_key = std::fs::read_to_string(tls_dir().join("ca.key")).unwrap();
        let ca_pem = std::fs::read_to_string(tls_dir().join("ca.pem")).unwrap();
        let issuer =
            Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key).unwrap()).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        (
            self.write(&format!("{common_name}.pem"), &cert.pem(), 0o644),
            self.write(&format!("{common_name}.key"), &key.serialize_pem(), 0o600),
        )
    }
}

fn servers_ca() -> PathBuf {
    tls_dir().join("ca.pem")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `url` with its host replaced and `query` appended.
fn with_host(url: &str, host: &str, query: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_host(Some(host)).unwrap();
    if !query.is_empty() {
        u.set_query(Some(query));
    }
    u.to_string()
}

/// Connects as the settings say and tells whether the session uses TLS, and as whom.
async fn session(settings: &Settings, url: &str) -> Result<(bool, String), ConnectError> {
    let url = edc_ingest::config::SecretUrl::new(url);
    let db = store::connect(&url, &settings.postgres).await?;
    let row = db
        .query_one(
            "SELECT s.ssl, current_user::text FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let out = (row.get(0), row.get(1));
    db.close().await;
    Ok(out)
}

fn refused(r: Result<(bool, String), ConnectError>, what: &str) -> String {
    match r {
        Err(ConnectError::Refused { why, .. }) => why,
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

/// A stand-in PostgreSQL that answers every TLS request with `N` (no TLS here), then hangs up.
async fn server_without_tls() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if s.read_exact(&mut request).await.is_ok() {
                    let _ = s.write_all(b"N").await;
                }
            });
        }
    });
    port
}

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
    // prefer, the default: TLS when the server offers it. disable: never.
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
