//! TLS to PostgreSQL, with libpq's `sslmode` semantics over rustls.
//!
//! tokio-postgres reads only `sslmode=disable|prefer|require` and knows no certificate files, so
//! the TLS parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`) are taken out of the URL or
//! `key=value` string here, before tokio-postgres parses the rest; what they ask for is checked by
//! the rustls configuration of [`Tls`]:
//!
//! | sslmode | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | |
//! | `prefer` (the default) | if the server offers it | not checked; with a CA file, it must chain to it |
//! | `require` | always | not checked; with a CA file, it must chain to it (as libpq does) |
//! | `verify-ca` | always | chains to the CA file (required) |
//! | `verify-full` | always | chains to the CA file (required) and names the host connected to |
//!
//! A URL's `sslrootcert`, `sslcert` and `sslkey` override `postgres.tls.*` for that URL.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::config::TlsSettings;
use crate::tls::{Files, TlsError, Verify, client_config};

/// libpq's `sslmode` values that edc-ingest supports (`allow` is not one of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, TlsError> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(TlsError(format!(
                    "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }

    /// What tokio-postgres does about TLS: the checks are the connector's.
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// The TLS parameters of a URL or connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlTls {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
}

impl UrlTls {
    /// Takes one parameter; false if it is not a TLS one.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.sslrootcert = Some(value.into()),
            "sslcert" => self.sslcert = Some(value.into()),
            "sslkey" => self.sslkey = Some(value.into()),
            _ => return false,
        }
        true
    }
}

/// `text` without its TLS parameters, and those parameters. `None` if it does not parse (its
/// parser then says why, without this code showing it).
pub fn split_tls_params(text: &str) -> Option<(String, UrlTls)> {
    let mut tls = UrlTls::default();
    let is_url = ["postgres://", "postgresql://"]
        .iter()
        .any(|p| text.starts_with(p));
    if is_url {
        // As tokio-postgres reads a URL: the credentials end at the first `@`, the parameters
        // start at the first `?` after them.
        let after_scheme = text.find("://")? + 3;
        let from = text[after_scheme..]
            .find('@')
            .map_or(after_scheme, |at| after_scheme + at + 1);
        let Some(q) = text[from..].find('?').map(|q| from + q) else {
            return Some((text.to_string(), tls));
        };
        let mut kept = Vec::new();
        for pair in text[q + 1..].split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=')?;
            let (k, v) = (percent_decode(key)?, percent_decode(value)?);
            if !tls.take(&k, v) {
                kept.push(pair);
            }
        }
        let mut rest = text[..q].to_string();
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        Some((rest, tls))
    } else {
        let mut rest = String::with_capacity(text.len());
        for (key, value, span) in conninfo_pairs(text)? {
            if !tls.take(&key, value) {
                rest.push_str(&text[span]);
                rest.push(' ');
            }
        }
        Some((rest.trim_end().to_string(), tls))
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// libpq's `key = value` syntax (values may be single-quoted, with `\'` and `\\` escapes): each
/// pair's key, value and place in the text.
fn conninfo_pairs(text: &str) -> Option<Vec<(String, String, std::ops::Range<usize>)>> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_space(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_space(&mut chars);
        if chars.next().map(|(_, c)| c) != Some('=') || key.is_empty() {
            return None;
        }
        skip_space(&mut chars);
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next()?.1 {
                    '\\' => value.push(chars.next()?.1),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?.1);
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(text.len(), |(i, _)| *i);
        out.push((key, value, start..end));
    }
    Some(out)
}

/// How one URL connects: what tokio-postgres negotiates, and the connector that checks the rest.
#[derive(Clone)]
pub struct Tls {
    pub mode: SslMode,
    connector: MakeRustls,
}

impl Tls {
    /// The TLS of a URL whose parameters are `params`, with the files of `settings`
    /// (`postgres.tls`) where the URL names none.
    pub fn new(params: &UrlTls, settings: &TlsSettings) -> Result<Tls, TlsError> {
        let mode = match &params.sslmode {
            Some(m) => SslMode::parse(m)?,
            None => SslMode::Prefer,
        };
        let ca = params
            .sslrootcert
            .as_deref()
            .or(settings.ca_file.as_deref());
        let (cert, key) = if params.sslcert.is_some() || params.sslkey.is_some() {
            (params.sslcert.as_deref(), params.sslkey.as_deref())
        } else {
            (settings.cert_file.as_deref(), settings.key_file.as_deref())
        };
        let files = if mode == SslMode::Disable {
            Files::default()
        } else {
            Files::read_paths(ca, cert, key, "postgres.tls")?
        };
        let verify = match mode {
            SslMode::VerifyFull => Verify::Full,
            SslMode::VerifyCa => Verify::Chain,
            // libpq: with a root certificate, require (and prefer) check the chain too.
            _ if files.roots.is_some() => Verify::Chain,
            _ => Verify::Nothing,
        };
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && files.roots.is_none() {
            return Err(TlsError(format!(
                "sslmode={} needs the CA's certificate: postgres.tls.ca_file (or sslrootcert in the URL)",
                params.sslmode.as_deref().unwrap_or_default()
            )));
        }
        let config = client_config(verify, &files, "postgres.tls")?;
        Ok(Tls {
            mode,
            connector: MakeRustls(Arc::new(config)),
        })
    }

    /// Sets what tokio-postgres negotiates in `cfg`; returns the connector.
    pub fn apply(&self, cfg: &mut tokio_postgres::Config) -> MakeRustls {
        cfg.ssl_mode(self.mode.negotiation());
        self.connector.clone()
    }
}

/// tokio-postgres's TLS connector over rustls.
#[derive(Clone)]
pub struct MakeRustls(Arc<ClientConfig>);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        // A Unix socket has no host name; the server never offers TLS there, so no handshake
        // happens, but the connector must still be made.
        let name = ServerName::try_from(domain.to_string()).ok();
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: Option<ServerName<'static>>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let name = self.name.ok_or_else(|| {
                io::Error::other(TlsError(
                    "no host name to check the certificate against".into(),
                ))
            })?;
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS stream to PostgreSQL.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    /// `tls-server-end-point` (RFC 5929): the hash of the server's certificate, with the hash of
    /// its signature algorithm (SHA-256 for MD5 and SHA-1). None for algorithms without one
    /// (Ed25519, RSA-PSS): SCRAM then runs without channel binding, as with libpq.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, conn) = self.0.get_ref();
        let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) else {
            return ChannelBinding::none();
        };
        match end_point_hash(cert) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

fn end_point_hash(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    let hash = match oid.as_str() {
        // md5/sha1/sha256 with RSA, ecdsa with sha1/sha256, dsa with sha1/sha256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2"
        | "1.2.840.10040.4.3"
        | "2.16.840.1.101.3.4.3.2" => sha2::Sha256::digest(der).to_vec(),
        "1.2.840.113549.1.1.14" | "1.2.840.10045.4.3.1" => sha2::Sha224::digest(der).to_vec(),
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => sha2::Sha384::digest(der).to_vec(),
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => sha2::Sha512::digest(der).to_vec(),
        _ => return None,
    };
    Some(hash)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> (String, UrlTls) {
        split_tls_params(text).unwrap()
    }

    #[test]
    fn the_tls_parameters_leave_the_url_and_the_rest_stays_as_it_was() {
        let (rest, tls) = split(
            "postgres://edc:p%3Fw@db1:5432,db2/edc?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        );
        assert_eq!(
            rest,
            "postgres://edc:p%3Fw@db1:5432,db2/edc?application_name=x&connect_timeout=3"
        );
        assert_eq!(tls.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(tls.sslrootcert, Some(PathBuf::from("/etc/ca.pem")));
        let (rest, tls) = split("postgresql://edc:a?b@db/edc?sslmode=require");
        assert_eq!(rest, "postgresql://edc:a?b@db/edc");
        assert_eq!(tls.sslmode.as_deref(), Some("require"));
        let (rest, tls) = split("postgres://db/edc");
        assert_eq!(
            (rest.as_str(), tls),
            ("postgres://db/edc", UrlTls::default())
        );
    }

    #[test]
    fn the_key_value_form_too() {
        let (rest, tls) = split(
            "host=db sslmode=verify-ca password='a b\\'c' sslcert='/x y/c.pem' sslkey=/k.pem dbname=edc",
        );
        assert_eq!(rest, "host=db password='a b\\'c' dbname=edc");
        assert_eq!(tls.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(tls.sslcert, Some(PathBuf::from("/x y/c.pem")));
        assert_eq!(tls.sslkey, Some(PathBuf::from("/k.pem")));
        assert!(split_tls_params("host=db password='open").is_none());
    }

    #[test]
    fn modes_that_check_the_server_need_a_ca() {
        let none = TlsSettings::default();
        for mode in ["verify-ca", "verify-full"] {
            let params = UrlTls {
                sslmode: Some(mode.into()),
                ..Default::default()
            };
            let e = Tls::new(&params, &none).err().unwrap();
            assert!(e.0.contains("postgres.tls.ca_file"), "{e}");
        }
        for mode in [None, Some("disable"), Some("prefer"), Some("require")] {
            let params = UrlTls {
                sslmode: mode.map(str::to_string),
                ..Default::default()
            };
            assert!(Tls::new(&params, &none).is_ok(), "{mode:?}");
        }
        let params = UrlTls {
            sslmode: Some("allow".into()),
            ..Default::default()
        };
        assert!(Tls::new(&params, &none).err().unwrap().0.contains("allow"));
    }

    #[test]
    fn the_end_point_hash_follows_the_signature_algorithm() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        // rcgen signs with ECDSA P-256 and SHA-256 by default.
        let der = cert.cert.der();
        assert_eq!(
            end_point_hash(der),
            Some(sha2::Sha256::digest(der).to_vec())
        );
        assert_eq!(end_point_hash(b"not a certificate"), None);
    }
}
