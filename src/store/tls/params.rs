//! The TLS parameters of a PostgreSQL URL or `key=value` connection string (`sslmode`,
//! `sslrootcert`, `sslcert`, `sslkey`, `channel_binding`), taken out before tokio-postgres parses
//! the rest: it reads only some of them, and knows no certificate files.

use std::path::PathBuf;

/// The TLS parameters of a URL or connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlTls {
    pub sslmode: Option<String>,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub channel_binding: Option<String>,
}

impl UrlTls {
    /// Takes one parameter; false if it is not a TLS one.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.sslrootcert = Some(value.into()),
            "sslcert" => self.sslcert = Some(value.into()),
            "sslkey" => self.sslkey = Some(value.into()),
            "channel_binding" => self.channel_binding = Some(value),
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
        let (rest, tls) =
            split("postgresql://edc:a?b@db/edc?sslmode=require&channel_binding=prefer");
        assert_eq!(rest, "postgresql://edc:a?b@db/edc");
        assert_eq!(tls.sslmode.as_deref(), Some("require"));
        assert_eq!(tls.channel_binding.as_deref(), Some("prefer"));
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
}
