//! The dead-peer settings on every connection: the server's side of each session, and the
//! keepalive timers of both sockets; and a server too old for one of them.

use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

/// The server-side settings of a session, in their base units, by name.
async fn session_settings(db: &tokio_postgres::Client) -> Vec<(String, String)> {
    db.query(
        "SELECT name, setting FROM pg_settings
         WHERE name IN ('tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count',
                        'tcp_user_timeout', 'client_connection_check_interval')
         ORDER BY name",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The keepalive timers of the sockets of the session's connection (`ss -o`), in seconds: the
/// client's and the server's, once both are idle (a socket with data in flight shows its
/// retransmission timer instead).
async fn keepalive_timers(db: &tokio_postgres::Client) -> Vec<f64> {
    let port: i32 = db
        .query_one(
            "SELECT client_port FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let filter = format!("( sport = :{port} or dport = :{port} )");
    let read = || {
        let out = Command::new("ss")
            .args(["-tnoH", "state", "established", &filter])
            .output()
            .expect("ss (iproute2) runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split("timer:(keepalive,").nth(1)?.split(',').next())
            .map(ss_seconds)
            .collect::<Vec<f64>>()
    };
    let mut timers = Vec::new();
    let _ = kit::wait::try_wait_for("both sockets idle", Duration::from_secs(5), || {
        timers = read();
        let both = timers.len() == 2;
        async move { both }
    })
    .await;
    timers
}

/// A timer as `ss` prints it (`119min`, `1min5sec`, `10sec`, `9.980ms` for 9 s 980 ms, `450ms`),
/// in seconds.
fn ss_seconds(text: &str) -> f64 {
    let mut rest = text;
    let mut total = 0.0;
    if let Some((m, r)) = rest.split_once("min") {
        total += m.parse::<f64>().unwrap_or(f64::MAX) * 60.0;
        rest = r;
    }
    if let Some(r) = rest.strip_suffix("sec") {
        total += r.parse::<f64>().unwrap_or(f64::MAX);
    } else if let Some(r) = rest.strip_suffix("ms") {
        total += match r.split_once('.') {
            Some((s, ms)) => {
                s.parse::<f64>().unwrap_or(f64::MAX) + ms.parse::<f64>().unwrap_or(0.0) / 1000.0
            }
            None => r.parse::<f64>().unwrap_or(f64::MAX) / 1000.0,
        };
    }
    total
}

#[tokio::test]
async fn every_database_connection_gives_up_a_silent_peer_on_both_ends() {
    // Arrange: the default dead-peer settings.
    let env = TestEnv::new().await;
    let settings = env.settings(&[]);
    let url = edc_ingest::config::SecretUrl::new(env.db_url.as_str());
    let expected: Vec<(String, String)> = [
        ("client_connection_check_interval", "10000"),
        ("tcp_keepalives_count", "3"),
        ("tcp_keepalives_idle", "10"),
        ("tcp_keepalives_interval", "5"),
        ("tcp_user_timeout", "30000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    // Act: a dedicated connection (the relay's, the tools'), and one of the pool (the workers').
    let dedicated = edc_ingest::store::connect(&url, &settings.postgres)
        .await
        .unwrap();
    let pool = edc_ingest::store::pool(&settings.postgres).unwrap();
    let pooled = pool.get().await.unwrap();

    // Assert: the server's side of each session, and both sockets' keepalive timers, armed at
    // keepalives_idle (10 s) rather than the system's two hours.
    for (what, db) in [("dedicated", &*dedicated), ("pooled", &**pooled)] {
        assert_eq!(session_settings(db).await, expected, "{what}");
        let timers = keepalive_timers(db).await;
        assert_eq!(timers.len(), 2, "{what}: both ends keep alive: {timers:?}");
        assert!(timers.iter().all(|t| *t <= 10.0), "{what}: {timers:?}");
    }
    drop(pooled);
    pool.close();
    dedicated.close().await;
    env.cleanup().await;
}

/// An `ErrorResponse` with `code` and `message`.
fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        fields.push(tag);
        fields.extend(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    out.extend((fields.len() as i32 + 4).to_be_bytes());
    out.extend(fields);
    out
}

/// A stand-in PostgreSQL 13: it refuses a startup whose options set
/// `client_connection_check_interval` as that server does (it does not know the setting), and any
/// other with a wrong password. The `options` of every startup it received.
async fn server_13() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                // An SSLRequest first (sslmode=prefer): no TLS here.
                let mut len = s.read_i32().await?;
                let mut body = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
                s.read_exact(&mut body).await?;
                if body == [4, 210, 22, 47] {
                    s.write_all(b"N").await?;
                    len = s.read_i32().await?;
                    body = vec![0u8; usize::try_from(len - 4).unwrap_or(0)];
                    s.read_exact(&mut body).await?;
                }
                // The protocol version, then name\0value\0 pairs.
                let params: Vec<&[u8]> = body[4..].split(|b| *b == 0).collect();
                let options = params
                    .chunks(2)
                    .find(|kv| kv[0] == b"options")
                    .map(|kv| String::from_utf8_lossy(kv[1]).into_owned())
                    .unwrap_or_default();
                let answer = if options.contains("client_connection_check_interval") {
                    error_response(
                        "42704",
                        "unrecognized configuration parameter \"client_connection_check_interval\"",
                    )
                } else {
                    error_response("28P01", "password authentication failed for user \"edc\"")
                };
                kept.lock().unwrap().push(options);
                s.write_all(&answer).await?;
                Ok::<_, std::io::Error>(())
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_server_without_client_connection_check_interval_is_connected_to_without_it() {
    let env = TestEnv::new().await;
    let (port, seen) = server_13().await;
    let mut url = url::Url::parse(&env.db_url).unwrap();
    url.set_port(Some(port)).unwrap();
    // Off this thread: the stand-in runs on the test's runtime.
    let out = tokio::task::spawn_blocking({
        let process = launch(&env, &[("EDC__POSTGRES__URL", url.as_str())])
            .args(["migrate"])
            .spawn();
        move || process.output_within(COMMAND_WAIT)
    })
    .await
    .unwrap();
    // The second attempt reached authentication, which this stand-in refuses for good.
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("28P01"), "{}", text(&out));
    assert!(
        text(&out).contains("connecting without it"),
        "{}",
        text(&out)
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].contains("client_connection_check_interval=10000"),
        "{seen:?}"
    );
    assert!(
        !seen[1].contains("client_connection_check_interval"),
        "{seen:?}"
    );
    assert!(seen[1].contains("tcp_keepalives_idle=10"), "{seen:?}");
    env.cleanup().await;
}
