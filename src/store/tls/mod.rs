//! TLS to PostgreSQL, with libpq's `sslmode` semantics over rustls, and what edc-ingest adds to
//! them: a default that never leaves a connection over the network unverified by omission,
//! channel binding whenever a password is sent over TLS, and a warning at start for anything below
//! `verify-ca`.
//!
//! tokio-postgres reads only `sslmode=disable|prefer|require` and knows no certificate files, so
//! the TLS parameters are taken out of the URL or `key=value` string first ([`params`]); what they
//! ask for is checked by the rustls configuration of [`Tls`] ([`stream`]):
//!
//! | sslmode | encrypted | certificate chains to the CA | host name checked | falls back to plaintext |
//! |---|---|---|---|---|
//! | `disable` | no | no | no | always plaintext |
//! | `prefer` | if the server offers TLS | only with a CA file | no | yes, silently |
//! | `require` | yes | only with a CA file (as libpq does) | no | no |
//! | `verify-ca` | yes | yes (a CA file is required) | no | no |
//! | `verify-full` | yes | yes (a CA file is required) | yes | no |
//!
//! Without `sslmode` in the URL: `verify-full` when a CA is set (`postgres.tls.ca_file`, or
//! `sslrootcert` in the URL); else `prefer` when every host is this machine (loopback or a Unix
//! socket, as the demo and the tests run); else the connection is refused before it is tried.
//!
//! Channel binding (`channel_binding` in the URL, libpq's values): `require` by default whenever
//! the URL carries a password and the mode always encrypts (`require`, `verify-ca`,
//! `verify-full`): the password exchange must then be SCRAM-SHA-256-PLUS, bound to the server's
//! certificate (`tls-server-end-point`), and a server that asks for the password any other way
//! (cleartext, MD5, SCRAM without binding) is refused before anything of it is sent. Under
//! `prefer` it is used when offered but not required: whoever could exploit its absence could as
//! well strip TLS, which `prefer` accepts. Without a password (a client certificate) there is
//! nothing to bind.
//!
//! A URL's `sslrootcert`, `sslcert` and `sslkey` override `postgres.tls.*` for that URL.

mod params;
mod stream;

pub use params::{UrlTls, split_tls_params};
pub use stream::{MakeRustls, RustlsConnect, RustlsStream};

use std::net::IpAddr;
use std::sync::Arc;

use tokio_postgres::config::{ChannelBinding, Host};

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

    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether every connection is encrypted (no plaintext fallback).
    fn always_encrypted(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
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

fn parse_binding(value: &str) -> Result<ChannelBinding, TlsError> {
    Ok(match value {
        "disable" => ChannelBinding::Disable,
        "prefer" => ChannelBinding::Prefer,
        "require" => ChannelBinding::Require,
        other => {
            return Err(TlsError(format!(
                "channel_binding `{other}` is not one of disable, prefer, require"
            )));
        }
    })
}

fn binding_name(binding: ChannelBinding) -> &'static str {
    match binding {
        ChannelBinding::Disable => "disable",
        ChannelBinding::Require => "require",
        _ => "prefer",
    }
}

/// How one URL connects: what tokio-postgres negotiates, and the connector that checks the rest.
#[derive(Clone)]
pub struct Tls {
    pub mode: SslMode,
    /// No `sslmode` in the URL: the mode is the default.
    pub defaulted: bool,
    /// The server's certificate must chain to a CA file.
    pub chain_checked: bool,
    pub channel_binding: ChannelBinding,
    /// The URL carries a password.
    password: bool,
    connector: MakeRustls,
}

impl Tls {
    /// The TLS of a URL whose parameters are `params` and whose other settings are `cfg`, with
    /// the files of `settings` (`postgres.tls`) where the URL names none.
    pub fn new(
        params: &UrlTls,
        settings: &TlsSettings,
        cfg: &tokio_postgres::Config,
    ) -> Result<Tls, TlsError> {
        let ca = params
            .sslrootcert
            .as_deref()
            .or(settings.ca_file.as_deref());
        let (mode, defaulted) = match &params.sslmode {
            Some(m) => (SslMode::parse(m)?, false),
            None if ca.is_some() => (SslMode::VerifyFull, true),
            None if is_local(cfg) => (SslMode::Prefer, true),
            None => {
                return Err(TlsError(format!(
                    "{} is not this machine, and neither sslmode nor a CA is set, so nothing would \
                     check the server: set postgres.tls.ca_file (verify-full is then the default), \
                     or write in the URL what you accept (sslmode=verify-full&sslrootcert=FILE; \
                     sslmode=require: encrypted, the server unchecked; sslmode=disable: plaintext)",
                    hosts(cfg)
                )));
            }
        };
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
                mode.name()
            )));
        }
        let password = cfg.get_password().is_some();
        let channel_binding = match &params.channel_binding {
            Some(b) => parse_binding(b)?,
            None if password && mode.always_encrypted() => ChannelBinding::Require,
            None => ChannelBinding::Prefer,
        };
        let config = client_config(verify, &files, "postgres.tls")?;
        Ok(Tls {
            mode,
            defaulted,
            chain_checked: verify != Verify::Nothing,
            channel_binding,
            password,
            connector: MakeRustls(Arc::new(config)),
        })
    }

    /// Sets what tokio-postgres negotiates in `cfg`; returns the connector.
    pub fn apply(&self, cfg: &mut tokio_postgres::Config) -> MakeRustls {
        cfg.ssl_mode(self.mode.negotiation());
        cfg.channel_binding(self.channel_binding);
        self.connector.clone()
    }

    /// What this connection leaves unchecked, in one line, when it is less than `verify-ca`
    /// (always encrypted, the certificate chained to a CA) or sends a password over TLS without
    /// channel binding; None otherwise.
    pub fn weakness(&self) -> Option<String> {
        let below_verify_ca = !(self.mode.always_encrypted() && self.chain_checked);
        let unbound = self.password
            && self.mode.always_encrypted()
            && self.channel_binding != ChannelBinding::Require;
        if !below_verify_ca && !unbound {
            return None;
        }
        let mut line = format!("sslmode={}", self.mode.name());
        if self.defaulted {
            line.push_str(" (the default for this machine without a CA)");
        }
        line.push_str(": ");
        line.push_str(match (self.mode, self.chain_checked) {
            (SslMode::Disable, _) => "not encrypted, and the server is not checked at all",
            (SslMode::Prefer, false) => {
                "encrypted only if the server offers TLS, else plaintext without notice; neither \
                 the server's certificate nor its host name is checked"
            }
            (SslMode::Prefer, true) => {
                "encrypted only if the server offers TLS, else plaintext without notice; the \
                 certificate must chain to the CA file, its host name is not checked"
            }
            (SslMode::Require, false) => {
                "encrypted, but neither the server's certificate nor its host name is checked, so \
                 anything on the path can pose as the server"
            }
            (_, true) => "encrypted; the certificate must chain to the CA file",
            (_, false) => "encrypted",
        });
        if unbound {
            line.push_str(&format!(
                "; channel_binding={}: the password is sent without channel binding",
                binding_name(self.channel_binding)
            ));
        }
        line.push_str(
            ". verify-full with postgres.tls.ca_file checks the certificate and the host name",
        );
        Some(line)
    }
}

/// Whether every host of `cfg` is this machine: `localhost`, a loopback address, a Unix socket.
fn is_local(cfg: &tokio_postgres::Config) -> bool {
    let loopback = |name: &str| {
        name.eq_ignore_ascii_case("localhost")
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    let hosts = cfg.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => loopback(name),
        #[cfg(unix)]
        Host::Unix(_) => true,
    });
    hosts && cfg.get_hostaddrs().iter().all(|ip| ip.is_loopback())
}

/// The hosts of `cfg`, for a message (host names and socket paths are no secrets).
fn hosts(cfg: &tokio_postgres::Config) -> String {
    let names: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if names.is_empty() {
        "the server".into()
    } else {
        names.join(",")
    }
}

#[cfg(test)]
mod tests;
