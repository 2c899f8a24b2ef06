//! TLS to PostgreSQL and RabbitMQ, against the local servers with TLS on (`scripts/services.sh`
//! makes their throwaway CA and a certificate that names `localhost` only). The tests make the rest
//! themselves: a CA of their own (the wrong CA), and client certificates signed by the servers' CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use edc_ingest::config::Settings;
use edc_ingest::store::{self, ConnectError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::helpers::*;

mod amqps;
mod defaults;
mod postgres;

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
