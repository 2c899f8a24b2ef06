//! What an operator writes: a study protocol's YAML, the configuration file and its `EDC__*`
//! environment overrides.

use serde_json::Map;

use super::parts;
use crate::config::{SecretUrl, Settings, redact_url};
use crate::pipeline::validate::{RecordContext, validate_items};
use crate::protocol::{Protocol, Registry};

/// One protocol file. One that loads passes what `check-config` checks of the set (loaded as the
/// only file of `studies_dir`), and each of its forms validates an empty record without a panic.
pub fn protocol_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(protocol) = Protocol::parse(text) else {
        return;
    };
    let registry = Registry::from_texts(&[("study.yaml", text)]);
    let registry = match registry {
        Ok(r) => r,
        Err(e) => panic!("a protocol that loads fails check-config: {e}"),
    };
    let _ = registry.describe();
    let site = protocol.sites.iter().min().map_or("", String::as_str);
    let visit = protocol.visits.iter().min().map_or("", String::as_str);
    for (name, form) in &protocol.forms {
        let _ = form.cel_mapping();
        let context = RecordContext {
            study: &protocol.study,
            site,
            visit,
            form: name,
        };
        let _ = validate_items(&protocol, context, Map::new());
    }
}

/// The configuration file (the first part) and `KEY=VALUE` lines of environment (the second).
/// Settings that load never show a URL's password where `describe` and `Debug` print the URL.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let p = parts(text.as_bytes(), 2);
    let yaml = String::from_utf8_lossy(p[0]);
    let env: Vec<(String, String)> = p
        .get(1)
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let Ok(settings) = Settings::load_from_str(&yaml, env) else {
        return;
    };
    let _ = (settings.describe(), format!("{settings:?}"));
    let mut urls: Vec<&SecretUrl> = vec![&settings.amqp.url, &settings.postgres.url];
    urls.extend(settings.postgres.migrate_url.as_ref());
    for url in urls {
        // What `describe` and `Debug` print of it, and what they print of its nodes without their
        // passwords: text of the password that shows either way was written elsewhere in the URL
        // (in a host, a path or a query), where it is not a secret. The query is written back
        // encoded, so it is compared in the printed form, not as written.
        let shown = format!("{url} {url:?}");
        let parsed: Vec<url::Url> = url
            .nodes()
            .into_iter()
            .filter_map(|n| url::Url::parse(n).ok())
            .collect();
        let bare: String = parsed
            .iter()
            .map(|p| {
                let mut b = p.clone();
                let _ = b.set_password(None);
                format!("{} {}", b, redact_url(b.as_str()))
            })
            .collect();
        for raw in parsed.iter().filter_map(|p| p.password()) {
            for secret in [raw.to_string(), percent_decoded(raw)] {
                let elsewhere = bare.contains(&secret)
                    || redacted_words().iter().any(|w| w.contains(&secret[..]));
                if secret.len() >= 6 && !elsewhere {
                    assert!(!shown.contains(&secret), "a password shows in the settings");
                }
            }
        }
    }
}

/// What a redacted URL says in place of a password or of itself: a password that is part of one
/// of them shows, by chance.
fn redacted_words() -> [&'static str; 3] {
    [
        "***",
        "[redacted]",
        "[a URL that does not parse; not shown]",
    ]
}

fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
