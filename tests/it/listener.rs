//! The HTTP listener of the real binary cannot be starved: while others hold 64 idle connections
//! to its port (re-opening each one it closes), or trickle request heads a byte a second,
//! `/livez` still answers within a second, every time the kubelet would ask.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);
/// How fast a probe must be answered (the manifests give the kubelet 2 to 3 s).
const PROMPT: Duration = Duration::from_secs(1);

/// Connections to `port` kept open by a client that never finishes a request: `trickle` sends
/// one byte of a request head a second, else nothing is sent. Each connection the daemon closes
/// is opened again at once, so the listener is always as full as the client can make it.
struct Holder {
    stop: CancellationToken,
    reopened: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Holder {
    fn start(port: u16, count: usize, trickle: bool) -> Holder {
        let stop = CancellationToken::new();
        let reopened = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(hold(port, count, trickle, stop.clone(), reopened.clone()));
        Holder {
            stop,
            reopened,
            task,
        }
    }

    /// Stops holding; how many connections the daemon closed and were opened again.
    async fn stop(self) -> usize {
        self.stop.cancel();
        self.task.await.unwrap();
        self.reopened.load(Relaxed)
    }
}

async fn hold(
    port: u16,
    count: usize,
    trickle: bool,
    stop: CancellationToken,
    reopened: Arc<AtomicUsize>,
) {
    const HEAD: &[u8] =
        b"GET /livez HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n";
    let mut open: Vec<(TcpStream, usize)> = Vec::new();
    for _ in 0..count {
        open.push((TcpStream::connect(("127.0.0.1", port)).await.unwrap(), 0));
    }
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut ticks = 0u64;
    while !stop.is_cancelled() {
        tick.tick().await;
        ticks += 1;
        for (stream, sent) in open.iter_mut() {
            let mut buf = [0u8; 256];
            let closed = match stream.try_read(&mut buf) {
                Ok(_) => true, // an end of file (or an answer, which ends the exchange too)
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            let wrote = if trickle && ticks.is_multiple_of(20) && !closed {
                let byte = HEAD[*sent % HEAD.len()];
                *sent += 1;
                stream.write_all(&[byte]).await.is_ok()
            } else {
                true
            };
            if (closed || !wrote)
                && let Ok(fresh) = TcpStream::connect(("127.0.0.1", port)).await
            {
                *stream = fresh;
                *sent = 0;
                reopened.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Asks `/livez` `times` times, 600 ms apart (past the head deadline, and the 5 s the listener
/// used to give): how long the slowest answer took; fails on any answer but 200.
async fn probe(port: u16, times: usize) -> Duration {
    let mut slowest = Duration::ZERO;
    let mut pace = tokio::time::interval(Duration::from_millis(600));
    for i in 0..times {
        pace.tick().await;
        let asked = Instant::now();
        let answer = http_get(port, "/livez").await;
        let took = asked.elapsed();
        assert_eq!(
            answer,
            Some((200, "ok\n".to_string())),
            "probe {i} after {took:?}"
        );
        slowest = slowest.max(took);
    }
    slowest
}

#[tokio::test]
async fn sixty_four_idle_connections_or_a_slowloris_do_not_starve_the_probes() {
    // Arrange: the daemon, ready.
    let env = TestEnv::new().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut daemon = run_daemon(&env, &[("EDC__HTTP__LISTEN", &listen)]);
    daemon.wait_ready(WAIT).await;

    // Act + Assert: 64 idle connections, twice the listener's capacity, kept open.
    let idle = Holder::start(port, 64, false);
    let slowest = probe(port, 10).await;
    let closed = idle.stop().await;
    eprintln!("64 idle connections: slowest /livez {slowest:?}, {closed} closed and reopened");
    assert!(
        slowest < PROMPT,
        "/livez took {slowest:?} behind 64 idle connections"
    );
    assert!(
        closed >= 64,
        "the idle connections were closed, and reopened ({closed})"
    );

    // A slowloris: 48 connections, each sending its request head a byte a second.
    let slow = Holder::start(port, 48, true);
    let slowest = probe(port, 10).await;
    let closed = slow.stop().await;
    eprintln!("slowloris of 48: slowest /livez {slowest:?}, {closed} closed and reopened");
    assert!(
        slowest < PROMPT,
        "/livez took {slowest:?} behind a slowloris"
    );
    assert!(
        closed >= 48,
        "the trickling connections were closed ({closed})"
    );

    // The daemon did its work throughout, and stops cleanly.
    assert_eq!(http_get(port, "/readyz").await.map(|(s, _)| s), Some(200));
    assert_eq!(daemon.stop(WAIT).await.code(), Some(0));
    env.cleanup().await;
}
