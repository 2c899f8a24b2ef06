//! The policy of [`Tls`]: the default `sslmode`, channel binding, and the warning line.

use super::*;

fn cfg(url: &str) -> (tokio_postgres::Config, UrlTls) {
    let (rest, params) = split_tls_params(url).unwrap();
    (rest.parse().unwrap(), params)
}

/// A CA file (any certificate will do: nothing connects here).
fn ca_file(dir: &tempfile::TempDir) -> TlsSettings {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, cert.cert.pem()).unwrap();
    TlsSettings {
        ca_file: Some(path),
        ..Default::default()
    }
}

fn tls(url: &str, settings: &TlsSettings) -> Result<Tls, TlsError> {
    let (cfg, params) = cfg(url);
    Tls::new(&params, settings, &cfg)
}

#[test]
fn modes_that_check_the_server_need_a_ca() {
    let none = TlsSettings::default();
    for mode in ["verify-ca", "verify-full"] {
        let e = tls(&format!("postgres://db/edc?sslmode={mode}"), &none)
            .err()
            .unwrap();
        assert!(e.0.contains("postgres.tls.ca_file"), "{e}");
    }
    for mode in ["disable", "prefer", "require"] {
        let url = format!("postgres://db/edc?sslmode={mode}");
        assert!(tls(&url, &none).is_ok(), "{mode}");
    }
    let e = tls("postgres://db/edc?sslmode=allow", &none).err().unwrap();
    assert!(e.0.contains("allow"), "{e}");
}

#[test]
fn with_a_ca_the_default_is_verify_full() {
    let dir = tempfile::tempdir().unwrap();
    let with_ca = ca_file(&dir);
    for url in ["postgres://db.example.org/edc", "postgres://127.0.0.1/edc"] {
        let t = tls(url, &with_ca).unwrap();
        assert_eq!((t.mode, t.defaulted), (SslMode::VerifyFull, true), "{url}");
    }
    // The URL's own CA counts too.
    let url = format!(
        "postgres://db.example.org/edc?sslrootcert={}",
        dir.path().join("ca.pem").display()
    );
    let t = tls(&url, &TlsSettings::default()).unwrap();
    assert_eq!(t.mode, SslMode::VerifyFull);
    // A mode written in the URL stays what it says.
    let t = tls("postgres://db/edc?sslmode=require", &with_ca).unwrap();
    assert_eq!((t.mode, t.defaulted), (SslMode::Require, false));
}

#[test]
fn without_a_ca_the_default_is_prefer_on_this_machine_and_a_refusal_elsewhere() {
    let none = TlsSettings::default();
    for url in [
        "postgres://edc:edc@127.0.0.1:5432/edc",
        "postgres://localhost/edc",
        "postgres://[::1]/edc",
        "host=/run/postgresql dbname=edc",
        "postgres://127.0.0.1,localhost/edc",
    ] {
        let t = tls(url, &none).unwrap();
        assert_eq!((t.mode, t.defaulted), (SslMode::Prefer, true), "{url}");
    }
    for url in [
        "postgres://edc:secret@db.example.org/edc",
        "postgres://127.0.0.1,db.example.org/edc",
        "host=10.0.0.5 dbname=edc",
        "host=localhost hostaddr=10.0.0.5 dbname=edc",
    ] {
        let e = tls(url, &none).err().unwrap();
        assert!(
            e.0.contains("not this machine") && e.0.contains("postgres.tls.ca_file"),
            "{url}: {e}"
        );
        assert!(!e.0.contains("secret"), "{e}");
    }
}

#[test]
fn a_password_sent_over_tls_needs_channel_binding() {
    let dir = tempfile::tempdir().unwrap();
    let with_ca = ca_file(&dir);
    let binding = |url: &str| tls(url, &with_ca).unwrap().channel_binding;
    for mode in ["require", "verify-ca", "verify-full"] {
        assert_eq!(
            binding(&format!("postgres://edc:pw@db/edc?sslmode={mode}")),
            ChannelBinding::Require,
            "{mode}"
        );
        // A client certificate and no password: nothing to bind.
        assert_eq!(
            binding(&format!("postgres://edc@db/edc?sslmode={mode}")),
            ChannelBinding::Prefer,
            "{mode}"
        );
    }
    // prefer may end in plaintext by design; disable never encrypts.
    for mode in ["prefer", "disable"] {
        assert_eq!(
            binding(&format!("postgres://edc:pw@db/edc?sslmode={mode}")),
            ChannelBinding::Prefer
        );
    }
    // Said in the URL, it wins, and a wrong value is refused.
    assert_eq!(
        binding("postgres://edc:pw@db/edc?sslmode=verify-full&channel_binding=disable"),
        ChannelBinding::Disable
    );
    let e = tls("postgres://db/edc?channel_binding=maybe", &with_ca)
        .err()
        .unwrap();
    assert!(e.0.contains("channel_binding"), "{e}");
}

#[test]
fn below_verify_ca_one_line_says_what_is_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let with_ca = ca_file(&dir);
    let none = TlsSettings::default();
    let line = |url: &str, s: &TlsSettings| tls(url, s).unwrap().weakness();
    for (url, s, says) in [
        ("postgres://db/edc?sslmode=disable", &none, "not encrypted"),
        (
            "postgres://127.0.0.1/edc",
            &none,
            "the default for this machine",
        ),
        ("postgres://db/edc?sslmode=prefer", &with_ca, "plaintext"),
        (
            "postgres://db/edc?sslmode=require",
            &none,
            "pose as the server",
        ),
        (
            "postgres://u:pw@db/edc?sslmode=verify-full&channel_binding=prefer",
            &with_ca,
            "without channel binding",
        ),
    ] {
        let w = line(url, s).unwrap_or_else(|| panic!("{url}: no warning"));
        assert!(w.contains(says), "{url}: {w}");
        assert!(!w.contains('\n') && !w.contains("pw"), "{w}");
    }
    for url in [
        "postgres://u:pw@db/edc?sslmode=verify-full",
        "postgres://u:pw@db/edc?sslmode=verify-ca",
        "postgres://u:pw@db/edc",
        // require with a CA file checks what verify-ca does.
        "postgres://u:pw@db/edc?sslmode=require",
    ] {
        assert_eq!(line(url, &with_ca), None, "{url}");
    }
}
