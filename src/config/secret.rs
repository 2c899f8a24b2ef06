//! Values that must never be printed: the pseudonymisation key and the passwords inside URLs.
//!
//! A [`SecretUrl`] prints only what a real parser made of it, with the password replaced: a URL is
//! parsed as a URL (the `url` crate), a PostgreSQL `key=value` connection string by its own rules.
//! The text as given is never printed, so a password that breaks the syntax (a `,`, a `?`, a
//! quote) cannot leak through a naive split: what does not parse is not shown at all.

use std::fmt;

use serde::{Deserialize, Deserializer};
use zeroize::Zeroize;

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`. Wiped from memory
/// when dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is handed to a library, never to a formatter.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A connection URL that may carry a password. It prints with the password masked.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(Secret::new(url))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The nodes of a list of AMQP URLs, in order (see [`nodes`]).
    pub fn nodes(&self) -> Vec<&str> {
        nodes(self.expose())
    }

    /// The same URL(s) with `password` set in each (from a `password_file`). None if a URL does not
    /// parse.
    pub fn with_password(&self, password: &str) -> Option<SecretUrl> {
        let text = self.expose();
        let replaced = if is_conninfo(text) {
            let mut quoted = String::with_capacity(password.len() + 2);
            for c in password.chars() {
                if c == '\'' || c == '\\' {
                    quoted.push('\\');
                }
                quoted.push(c);
            }
            format!("{text} password='{quoted}'")
        } else {
            let mut out = Vec::new();
            for node in nodes(text) {
                let mut url = url::Url::parse(node).ok()?;
                url.set_password(Some(password)).ok()?;
                out.push(url.to_string());
            }
            out.join(",")
        };
        Some(SecretUrl::new(replaced))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.expose()))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What is printed in place of a URL that does not parse.
const NOT_SHOWN: &str = "[a URL that does not parse; not shown]";

/// The nodes of a comma-separated list of URLs. A comma starts a new node only where a scheme
/// (`name://`) follows it, so a comma inside a password or a host list stays where it is.
pub fn nodes(list: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in list.match_indices(',') {
        let rest = list[i + 1..].trim_start();
        let scheme_len = rest.find("://").filter(|&n| {
            n > 0
                && rest[..n]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        });
        if scheme_len.is_some() {
            out.push(list[start..i].trim());
            start = i + 1;
        }
    }
    out.push(list[start..].trim());
    out
}

/// A PostgreSQL connection string in `key=value` form rather than a URL.
fn is_conninfo(text: &str) -> bool {
    !text.contains("://") && text.contains('=')
}

/// The URL(s) or connection string with every password replaced by `***` and every other secret
/// parameter (a query parameter or key named like a password) by `***`.
pub fn redact_url(text: &str) -> String {
    if is_conninfo(text) {
        return redact_conninfo(text).unwrap_or_else(|| NOT_SHOWN.to_string());
    }
    nodes(text)
        .into_iter()
        .map(|node| redact_one(node).unwrap_or_else(|| NOT_SHOWN.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret") || key == "pass"
}

fn redact_one(node: &str) -> Option<String> {
    let mut url = url::Url::parse(node).ok()?;
    if url.password().is_some() {
        url.set_password(Some("***")).ok()?;
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret_key(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Some(url.to_string())
}

/// libpq's `key = value` syntax: values may be single-quoted, with `\'` and `\\` escapes.
fn redact_conninfo(text: &str) -> Option<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?);
                } else {
                    value.push(c);
                }
            }
        }
        let shown = if is_secret_key(&key) {
            "***".to_string()
        } else if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '\'') {
            format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
        } else {
            value
        };
        out.push(format!("{key}={shown}"));
    }
    Some(out.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_each_url_of_a_list() {
        assert_eq!(
            redact_url("amqp://a:b@h1:5672/%2f,amqp://a:b@h2/%2f?heartbeat=5"),
            "amqp://a:***@h1:5672/%2f,amqp://a:***@h2/%2f?heartbeat=5"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn a_password_holding_a_comma_or_a_question_mark_never_shows() {
        for url in [
            "amqp://edc:hunt,er2@h1:5672/%2f",
            "postgres://edc:hu%3Fnter2@db/edc",
            "postgres://edc:hunt%2Cer2@db/edc?sslmode=require",
            "postgres://edc:hunt?er2@db/edc",
            "amqp://edc:hunt?er2@h1/%2f,amqp://edc:hunt,er2@h2/%2f",
        ] {
            let shown = redact_url(url);
            assert!(
                !shown.contains("hunt") && !shown.contains("er2"),
                "{url} -> {shown}"
            );
        }
        assert_eq!(
            nodes("amqp://a:x,y@h1/%2f, amqps://a:b@h2/%2f"),
            vec!["amqp://a:x,y@h1/%2f", "amqps://a:b@h2/%2f"]
        );
    }

    #[test]
    fn the_key_value_form_is_redacted_too() {
        let shown = redact_url("host=db port=5432 user=edc password=hunter2 dbname=edc");
        assert_eq!(shown, "host=db port=5432 user=edc password=*** dbname=edc");
        let shown = redact_url("host=db password='hun ter\\'2' user=edc");
        assert_eq!(shown, "host=db password=*** user=edc");
        assert!(!redact_url("host=db password='unterminated").contains("unterminated"));
    }

    #[test]
    fn secret_query_parameters_are_redacted() {
        let shown = redact_url("postgres://db/edc?user=edc&password=hunter2&sslmode=verify-full");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("sslmode=verify-full"), "{shown}");
    }

    #[test]
    fn a_password_from_a_file_is_set_in_every_form() {
        let url = SecretUrl::new("amqp://edc@h1/%2f,amqp://edc:old@h2/%2f");
        let with = url.with_password("n,e?w'pw").unwrap();
        assert_eq!(with.nodes().len(), 2);
        for node in with.nodes() {
            let parsed = url::Url::parse(node).unwrap();
            assert_eq!(
                percent_decode(parsed.password().unwrap()),
                "n,e?w'pw",
                "{node}"
            );
        }
        assert!(!with.to_string().contains("n,e"));
        let conninfo = SecretUrl::new("host=db user=edc")
            .with_password("it's")
            .unwrap();
        assert_eq!(conninfo.expose(), "host=db user=edc password='it\\'s'");
    }

    fn percent_decode(s: &str) -> String {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned()
    }
}
