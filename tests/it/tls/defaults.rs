//! What PostgreSQL connections get without saying: `verify-full` where a CA is set, channel
//! binding for a password sent over TLS (a server posing as the database, which `require` does not
//! check, never gets the password), and a warning at start for anything below `verify-ca`.

use std::sync::{Arc, Mutex};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[tokio::test]
async fn with_a_ca_and_no_sslmode_the_server_is_verified_in_full() {
    let env = TestEnv::new().await;
    let ca = path(&servers_ca());
    let with_ca = env.settings(&[("EDC__POSTGRES__TLS__CA_FILE", ca.as_str())]);
    // The servers' certificate names localhost only.
    let (tls, _) = session(&with_ca, &with_host(&env.db_url, "localhost", ""))
        .await
        .unwrap();
    assert!(tls, "the session is encrypted");
    let why = refused(
        session(&with_ca, &with_host(&env.db_url, "127.0.0.1", "")).await,
        "a host name the certificate does not name",
    );
    assert!(why.contains("certificate") && why.contains("name"), "{why}");
    env.cleanup().await;
}

/// How the stand-in asks for the password.
#[derive(Clone, Copy, Debug)]
enum Ask {
    /// In clear (`AuthenticationCleartextPassword`): whoever asks gets it as it is.
    Cleartext,
    /// SCRAM-SHA-256 without its channel-bound form, as a server in the middle would offer it.
    ScramWithoutBinding,
}

/// A stand-in that poses as PostgreSQL over TLS with a certificate of its own (`sslmode=require`
/// does not check it), then asks for the password as `ask` says. Its port, and the type bytes of
/// every message the client sent after its startup message.
async fn impostor(ask: Ask) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(edc_ingest::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let seen = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let mut ssl_request = [0u8; 8];
                tcp.read_exact(&mut ssl_request).await?;
                tcp.write_all(b"S").await?;
                let mut s = acceptor.accept(tcp).await?;
                let len = s.read_i32().await?;
                let mut startup = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
                s.read_exact(&mut startup).await?;
                let mut request = vec![b'R'];
                match ask {
                    Ask::Cleartext => {
                        request.extend(8i32.to_be_bytes());
                        request.extend(3i32.to_be_bytes());
                    }
                    Ask::ScramWithoutBinding => {
                        let mechanisms = b"SCRAM-SHA-256\0\0";
                        request.extend((8 + mechanisms.len() as i32).to_be_bytes());
                        request.extend(10i32.to_be_bytes());
                        request.extend(mechanisms);
                    }
                }
                s.write_all(&request).await?;
                s.flush().await?;
                // Whatever the client answers (a password, a SASL response), by its type byte.
                while let Ok(kind) = s.read_u8().await {
                    seen.lock().unwrap().push(kind);
                    let len = s.read_i32().await?;
                    let mut body = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
                    s.read_exact(&mut body).await?;
                }
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (port, sent)
}

#[tokio::test]
async fn a_server_posing_as_the_database_never_gets_the_password() {
    let env = TestEnv::new().await;
    let none = env.settings(&[]);
    for ask in [Ask::Cleartext, Ask::ScramWithoutBinding] {
        let (port, sent) = impostor(ask).await;
        let mut url = url::Url::parse(&env.db_url).unwrap();
        url.set_port(Some(port)).unwrap();
        url.set_query(Some("sslmode=require"));
        // A client that answered would wait for ever for the stand-in's verdict.
        let answer = tokio::time::timeout(Duration::from_secs(20), session(&none, url.as_str()))
            .await
            .map_err(|_| "no answer in 20 s");
        assert_eq!(
            *sent.lock().unwrap(),
            Vec::<u8>::new(),
            "{ask:?}: the client answered the request for its password"
        );
        let why = refused(answer.unwrap(), &format!("{ask:?}"));
        assert!(why.contains("channel binding"), "{ask:?}: {why}");
        assert!(!why.contains(":edc@"), "{ask:?}: the password shows: {why}");
    }
    env.cleanup().await;
}

/// The lines of `text` that warn about a PostgreSQL connection.
fn warnings(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("PostgreSQL connection not fully protected"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn below_verify_ca_the_start_says_in_one_line_what_is_not_checked() {
    let env = TestEnv::new().await;
    let ca = path(&servers_ca());
    let url = |host: &str, query: &str| with_host(&env.db_url, host, query);
    for (what, url, ca_file, says) in [
        (
            "require",
            url("127.0.0.1", "sslmode=require"),
            None,
            "neither the server's certificate nor its host name is checked",
        ),
        (
            "the default on this machine",
            url("127.0.0.1", ""),
            None,
            "plaintext",
        ),
        (
            "channel binding turned off",
            url("localhost", "sslmode=verify-full&channel_binding=disable"),
            Some(ca.as_str()),
            "without channel binding",
        ),
    ] {
        let mut extra = vec![("EDC__POSTGRES__URL", url.as_str())];
        extra.extend(ca_file.map(|f| ("EDC__POSTGRES__TLS__CA_FILE", f)));
        let out = edc(&env, &extra, &["migrate"]);
        assert!(out.status.success(), "{what}: {}", text(&out));
        let lines = warnings(&text(&out));
        assert_eq!(lines.len(), 1, "{what}: one line: {}", text(&out));
        assert!(lines[0].contains(says), "{what}: {}", lines[0]);
        assert!(lines[0].contains("WARN"), "{what}: {}", lines[0]);
        assert!(!lines[0].contains(":edc@"), "{what}: {}", lines[0]);
    }
    // The daemon says it at start too, once, with migrations left to the Job as on Kubernetes.
    let require = url("127.0.0.1", "sslmode=require");
    let mut daemon = run_daemon(
        &env,
        &[
            ("EDC__POSTGRES__URL", require.as_str()),
            ("EDC__POSTGRES__MIGRATE_ON_START", "false"),
        ],
    );
    daemon.wait_ready(WAIT).await;
    let exit = daemon.stop(WAIT).await;
    assert!(exit.success(), "{}", exit.stderr);
    let lines = warnings(&exit.stderr);
    assert_eq!(lines.len(), 1, "run: one line: {}", exit.stderr);
    assert!(lines[0].contains("pose as the server"), "{}", lines[0]);
    // verify-full with the CA, a password bound to the channel: nothing to say.
    let full = url("localhost", "sslmode=verify-full");
    let out = edc(
        &env,
        &[
            ("EDC__POSTGRES__URL", full.as_str()),
            ("EDC__POSTGRES__TLS__CA_FILE", ca.as_str()),
        ],
        &["migrate"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(warnings(&text(&out)), Vec::<String>::new());
    env.cleanup().await;
}
