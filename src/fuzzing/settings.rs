//! What an operator writes: a study protocol's YAML, the configuration file and its `EDC__*`
//! environment overrides.

use serde_json::Map;

use super::parts;
use crate::config::{SecretUrl, Settings};
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
/// Settings that load never show a URL's password in `describe` or `Debug`.
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
    let shown = format!("{} {:?}", settings.describe(), settings);
    let mut urls: Vec<&SecretUrl> = vec![&settings.amqp.url, &settings.postgres.url];
    urls.extend(settings.postgres.migrate_url.as_ref());
    for url in urls {
        for node in url.nodes() {
            let Ok(parsed) = url::Url::parse(node) else {
                continue;
            };
            let Some(raw) = parsed.password() else {
                continue;
            };
            let mut bare = parsed.clone();
            let _ = bare.set_password(None);
            let decoded = percent_decoded(raw);
            for secret in [raw.to_string(), decoded] {
                let elsewhere = bare.as_str().contains(&secret)
                    || text.matches(&secret[..]).count() > 1
                    || crate::config::DEFAULT_YAML.contains(&secret);
                if secret.len() >= 6 && !elsewhere {
                    assert!(!shown.contains(&secret), "a password shows in the settings");
                }
            }
        }
    }
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
