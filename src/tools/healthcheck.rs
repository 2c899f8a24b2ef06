//! `edc-ingest healthcheck [--url URL]`: asks a running daemon's HTTP listener, for a container's
//! HEALTHCHECK (the image has no curl). Exit 0 on a 200, 1 on anything else: another status, no
//! answer within the timeout, no listener. It needs no key, broker or database, and reads no setting
//! but `http.listen`, for its default URL; the other settings may be anything.
//!
//! A plain HTTP/1.0 GET over a `TcpStream`, with one deadline over connecting, sending and reading.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::config::HttpSettings;

/// The whole check, from connecting to the status line.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Used when the settings give nothing better.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9090/livez";
/// Most of an answer that is read (the status line and the start of the body).
const MAX_READ: usize = 4096;
/// Most of an answer that [`fetch`] reads: a scrape of `/metrics` is about 16 KiB.
const MAX_BODY: usize = 4 << 20;

/// `/livez` of the daemon whose `http.listen` is `listen`: on its port, at the address it listens
/// on (the loopback address when it listens on all of them). [`DEFAULT_URL`] when `listen` is
/// unknown, empty (the listener is off), not an address, or on port 0.
pub fn default_url(listen: Option<&str>) -> String {
    listen_base(listen.unwrap_or_default())
        .map_or_else(|| DEFAULT_URL.to_string(), |b| format!("{b}/livez"))
}

/// `http://IP:PORT` of the listener of a daemon whose `http.listen` is `listen`, as a client on the
/// same machine reaches it (the loopback address when it listens on all of them); None when the
/// listener is off, `listen` is not an address, or its port is 0 (chosen at start).
pub fn listen_base(listen: &str) -> Option<String> {
    let http = HttpSettings {
        listen: listen.to_string(),
    };
    let addr = http.address().ok()??;
    if addr.port() == 0 {
        return None;
    }
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(format!("http://{}", SocketAddr::new(ip, addr.port())))
}

/// What the daemon answered: its status code and the first line of its body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// GETs `url` (`http://HOST:PORT/PATH`) within `timeout`.
pub fn get(url: &str, timeout: Duration) -> Result<Answer, String> {
    let answer = exchange(url, timeout, MAX_READ)?;
    parse(&answer).ok_or_else(|| format!("{url}: not an HTTP answer"))
}

/// GETs `url` within `timeout`, for the whole body (up to 4 MiB): the status and the body.
pub fn fetch(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let answer = exchange(url, timeout, MAX_BODY)?;
    let status = parse(&answer)
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?
        .status;
    let text = String::from_utf8_lossy(&answer);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// Sends the request and reads the answer, up to `max` bytes.
fn exchange(url: &str, timeout: Duration, max: usize) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let target = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .collect();
    let left = |what: &str| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{url}: no answer within {timeout:?} ({what})"))
    };
    let mut stream = None;
    let mut errors = Vec::new();
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left("connecting")?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    let mut stream =
        stream.ok_or_else(|| format!("{url}: cannot connect ({})", errors.join("; ")))?;
    stream
        .set_write_timeout(Some(left("sending")?))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: edc-ingest-healthcheck\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while answer.len() < max {
        stream
            .set_read_timeout(Some(left("reading")?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The head is in: a body cut short still tells the status.
            Err(_) if answer.windows(4).any(|w| w == b"\r\n\r\n") => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("{url}: no answer within {timeout:?} (reading)"));
            }
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
    Ok(answer)
}

fn parse(answer: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let body = body.lines().next().unwrap_or("").trim().to_string();
    Some(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_url_follows_http_listen() {
        assert_eq!(default_url(None), DEFAULT_URL);
        assert_eq!(default_url(Some("127.0.0.1:9090")), DEFAULT_URL);
        assert_eq!(
            default_url(Some("0.0.0.0:9191")),
            "http://127.0.0.1:9191/livez"
        );
        assert_eq!(default_url(Some("[::]:9191")), "http://[::1]:9191/livez");
        assert_eq!(
            default_url(Some("10.1.2.3:9090")),
            "http://10.1.2.3:9090/livez"
        );
        assert_eq!(default_url(Some("")), DEFAULT_URL);
        assert_eq!(default_url(Some("127.0.0.1:0")), DEFAULT_URL);
        assert_eq!(default_url(Some("nonsense")), DEFAULT_URL);
    }

    #[test]
    fn an_answer_is_its_status_and_the_first_line_of_its_body() {
        assert_eq!(
            parse(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\nnot ready: draining\n"),
            Some(Answer {
                status: 503,
                body: "not ready: draining".into()
            })
        );
        assert_eq!(parse(b"HTTP/1.0 200 OK\r\n\r\n").unwrap().status, 200);
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse(b""), None);
    }

    #[test]
    fn a_url_that_is_not_plain_http_is_refused_and_a_closed_port_fails_fast() {
        assert!(get("https://127.0.0.1:9090/livez", TIMEOUT).is_err());
        assert!(get("http:///livez", TIMEOUT).is_err());
        // A port nothing listens on: bind one, note it, free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = Instant::now();
        let e = get(&format!("http://127.0.0.1:{port}/livez"), TIMEOUT).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
        assert!(started.elapsed() < TIMEOUT);
    }

    #[test]
    fn a_server_that_never_answers_times_out_within_the_deadline() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/livez", silent.local_addr().unwrap());
        let started = Instant::now();
        let e = get(&url, Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("no answer within"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
