//! TLS for the connections to PostgreSQL and RabbitMQ: one crypto provider for the whole process
//! (rustls with aws-lc-rs, the one lapin uses too), the PEM files of the settings, and the rustls
//! client configurations the two connections are made with.
//!
//! What is checked of the server's certificate is one of [`Verify`]: nothing (PostgreSQL's
//! `sslmode=prefer`/`require` without a CA), the chain to the given CA (`verify-ca`), the chain
//! and the host name (`verify-full`, and every `amqps://` connection), or the chain to the
//! system's store and the host name (`amqps://` without a CA file).

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::TlsSettings;

/// The largest PEM file read (a CA bundle, a certificate chain, a key).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// TLS settings that cannot be used: a file missing, unreadable or not PEM, a key others can read,
/// a check that needs a CA without one. Always the operator's to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The crypto provider of every TLS connection: aws-lc-rs, installed as the process default the
/// first time it is asked for (lapin's connector takes the process default too). A default some
/// other code installed first is kept, whatever it is.
pub fn provider() -> Arc<CryptoProvider> {
    static ONCE: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Fails only if one is installed already; then that one is used.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
    })
    .clone()
}

/// What is checked of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Nothing: the connection is encrypted, but the server is not authenticated.
    Nothing,
    /// It chains to the CA file; any host name.
    Chain,
    /// It chains to the CA file and names the host connected to.
    Full,
}

/// The files of `settings`, read and parsed; `key` names the settings in errors (`postgres.tls`).
#[derive(Clone, Debug, Default)]
pub struct Files {
    /// The CA certificates, if a CA file is set.
    pub roots: Option<Vec<CertificateDer<'static>>>,
    /// The client certificate chain and its key.
    pub identity: Option<Identity>,
}

/// A client certificate chain and its private key. The key is wiped by rustls's own types.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Identity({} certificate(s), key [redacted])",
            self.chain.len()
        )
    }
}

impl Files {
    /// Reads the files of `settings` (`key` is its place in the settings, for errors).
    pub fn read(settings: &TlsSettings, key: &str) -> Result<Files, TlsError> {
        Self::read_paths(
            settings.ca_file.as_deref(),
            settings.cert_file.as_deref(),
            settings.key_file.as_deref(),
            key,
        )
    }

    /// Reads the given files.
    pub fn read_paths(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key_file: Option<&Path>,
        key: &str,
    ) -> Result<Files, TlsError> {
        let roots = ca
            .map(|path| certificates(path, &format!("{key}.ca_file")))
            .transpose()?;
        let identity = match (cert, key_file) {
            (Some(cert), Some(private)) => Some(Identity {
                chain: certificates(cert, &format!("{key}.cert_file"))?,
                key: private_key(private, &format!("{key}.key_file"))?,
            }),
            (None, None) => None,
            _ => {
                return Err(TlsError(format!(
                    "{key}: a client certificate needs both its certificate and its key"
                )));
            }
        };
        Ok(Files { roots, identity })
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| TlsError(format!("{what}: {shown}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| TlsError(format!("{what}: {shown}: {e}")))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError(format!(
            "{what}: {shown} is larger than {MAX_PEM_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// Every certificate of a PEM file; at least one.
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what}: {} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{what}: {} holds no certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1): a private file
/// ([`crate::config::read_private_file`]), a regular file owned by the daemon's user that group
/// and others can neither read nor write (mode 0400 or 0600), checked on the opened descriptor.
fn private_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = crate::config::read_private_file(path, MAX_PEM_BYTES)
        .map_err(|e| TlsError(format!("{what}: {e}")))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        TlsError(format!(
            "{what}: {} holds no private key in PEM: {e}",
            path.display()
        ))
    })
}

/// A rustls client configuration that checks what `verify` says. `Chain` and `Full` need
/// `files.roots`; without roots, `Full` trusts the system's store (the platform verifier).
pub fn client_config(verify: Verify, files: &Files, key: &str) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("{key}: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (verify, &files.roots) {
        (Verify::Nothing, _) => Arc::new(NoCheck(provider.clone())),
        (Verify::Chain | Verify::Full, Some(roots)) => {
            let mut store = RootCertStore::empty();
            for cert in roots {
                store.add(cert.clone()).map_err(|e| {
                    TlsError(format!(
                        "{key}.ca_file: a certificate cannot be a trust anchor: {e}"
                    ))
                })?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
                .build()
                .map_err(|e| TlsError(format!("{key}.ca_file: {e}")))?;
            if verify == Verify::Chain {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
        (Verify::Full, None) => Arc::new(
            rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| TlsError(format!("{key}: the system's certificate store: {e}")))?,
        ),
        (Verify::Chain, None) => {
            return Err(TlsError(format!(
                "{key}: checking the server's certificate chain needs a CA file ({key}.ca_file)"
            )));
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &files.identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| TlsError(format!("{key}.cert_file / key_file: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Accepts any certificate (`sslmode=prefer`/`require` without a CA, as libpq does), but still
/// checks that the server holds its key: the handshake signatures are verified.
#[derive(Debug)]
struct NoCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the certificate must chain to the CA, whatever host name it is for. webpki checks
/// the name only once the chain is valid, so a name mismatch is the one error let through.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Whether a failed connection was refused by TLS itself, for good: a rustls error anywhere in
/// the error's chain (a certificate that does not chain to the CA or does not name the host, an
/// alert from the server refusing our certificate, no protocol in common), or a [`TlsError`]. An
/// I/O error without one (a reset, an end of file mid-handshake) is not: the server may be
/// restarting.
pub fn is_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<rustls::Error>() || e.is::<TlsError>() {
            return true;
        }
        // io::Error's `source()` skips the error it wraps: look inside it.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            && (inner.is::<rustls::Error>() || inner.is::<TlsError>())
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_loose_file_is_explained_with_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let e = Files::read_paths(
            Some(&dir.path().join("nope.pem")),
            None,
            None,
            "postgres.tls",
        )
        .unwrap_err();
        assert!(e.0.starts_with("postgres.tls.ca_file: "), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = Files::read_paths(Some(&empty), None, None, "amqp.tls").unwrap_err();
        assert!(e.0.contains("holds no certificate"), "{e}");
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Files::read_paths(None, Some(&empty), Some(&key), "amqp.tls").unwrap_err();
        assert!(e.0.contains("amqp.tls.cert_file"), "{e}");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_path = dir.path().join("cert.pem");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        let e = Files::read_paths(None, Some(&cert_path), Some(&key), "amqp.tls").unwrap_err();
        assert!(
            e.0.contains("amqp.tls.key_file") && e.0.contains("644"),
            "{e}"
        );
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let files =
            Files::read_paths(Some(&cert_path), Some(&cert_path), Some(&key), "amqp.tls").unwrap();
        assert!(!format!("{files:?}").contains("PRIVATE"));
        for verify in [Verify::Nothing, Verify::Chain, Verify::Full] {
            client_config(verify, &files, "amqp.tls").unwrap();
        }
        let e = client_config(Verify::Chain, &Files::default(), "postgres.tls").unwrap_err();
        assert!(e.0.contains("postgres.tls.ca_file"), "{e}");
    }

    #[test]
    fn a_client_key_its_group_can_read_or_reached_through_a_link_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert_path = dir.path().join("cert.pem");
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        for (mode, setting) in [(0o640, "amqp.tls"), (0o440, "postgres.tls")] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = Files::read_paths(None, Some(&cert_path), Some(&key), setting).unwrap_err();
            assert!(
                e.0.starts_with(&format!("{setting}.key_file: "))
                    && e.0.contains(&format!("{mode:03o}")),
                "{e}"
            );
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        Files::read_paths(None, Some(&cert_path), Some(&key), "amqp.tls").unwrap();
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        let e = Files::read_paths(None, Some(&cert_path), Some(&link), "amqp.tls").unwrap_err();
        assert!(e.0.contains("symbolic link"), "{e}");
        // Certificates and CAs are public: a link to one is fine (a ConfigMap mounts links).
        let cert_link = dir.path().join("ca-link.pem");
        std::os::unix::fs::symlink(&cert_path, &cert_link).unwrap();
        Files::read_paths(Some(&cert_link), Some(&cert_link), Some(&key), "amqp.tls").unwrap();
    }

    #[test]
    fn one_provider_for_the_process() {
        let p = provider();
        assert!(Arc::ptr_eq(&p, &provider()));
        assert!(Arc::ptr_eq(&p, CryptoProvider::get_default().unwrap()));
    }
}
