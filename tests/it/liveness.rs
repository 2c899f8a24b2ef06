//! Broker connections that fail without closing: a node that accepts a socket and never answers, and
//! a connection that goes silent mid-flood. The daemon must not wait on either for ever.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

/// Accepts connections and never says a word, keeping the sockets open.
async fn silent_node() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

/// A TCP proxy in front of the real broker. `cut()` silences the broker's side of every connection
/// open at that moment: nothing more reaches the daemon, while the daemon's frames (heartbeats
/// included) still reach the broker, which so sees a live client and never closes the connection.
/// Sockets stay open: no FIN, no RST. Connections made after the cut pass normally.
struct Proxy {
    port: u16,
    cuts: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicU64::new(0));
        let generation = cuts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let born = generation.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(forward(cr, sw, None));
                tokio::spawn(forward(sr, cw, Some((generation.clone(), born))));
            }
        });
        Proxy { port, cuts }
    }

    fn cut(&self) {
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut_after: Option<(Arc<AtomicU64>, u64)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some((cuts, born)) = &cut_after
            && cuts.load(Ordering::SeqCst) != *born
        {
            // Silent for ever, sockets held open, like a dead network path.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The broker's host and port, from the test URL.
fn broker_addr() -> (String, String) {
    let url = amqp_url();
    let after_at = url.rsplit('@').next().unwrap();
    let host_port = after_at.split('/').next().unwrap();
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5672"));
    (host.to_string(), port.to_string())
}

fn url_via(port: u16) -> String {
    let (host, real_port) = broker_addr();
    amqp_url().replacen(
        &format!("{host}:{real_port}"),
        &format!("127.0.0.1:{port}"),
        1,
    )
}

async fn stored(env: &TestEnv) -> i64 {
    env.count("SELECT count(*) FROM crf_records").await
}

async fn each_stored_once(env: &TestEnv, n: i64) {
    assert_eq!(stored(env).await, n);
    assert_eq!(
        env.count("SELECT count(*) FROM (SELECT DISTINCT record_id, version FROM crf_records) d")
            .await,
        n
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_trail WHERE action = 'created'")
            .await,
        n
    );
    assert_eq!(env.count("SELECT count(*) FROM rejections").await, 0);
    assert!(env.drain_dlq().await.is_empty(), "nothing dead-lettered");
}

#[tokio::test]
async fn a_node_that_accepts_but_never_answers_is_skipped() {
    // Arrange: the first node of amqp.url takes the TCP connection and then says nothing.
    let env = TestEnv::new().await;
    let lines = generated(50, 7, 0.0, 0.0);
    env.publish_lines(&lines).await;
    let silent = url_via(silent_node().await);
    let url = format!("{silent},{}", amqp_url());

    // Act
    let daemon = Daemon::start(env.settings(&[
        ("EDC__AMQP__URL", url.as_str()),
        ("EDC__AMQP__OPERATION_TIMEOUT", "1s"),
    ]));

    // Assert: it gives up on the silent node and consumes from the next one.
    wait_for("all 50 stored through the second node", WAIT, || async {
        stored(&env).await == 50
    })
    .await;
    daemon.stop().await;
    each_stored_once(&env, 50).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_connection_that_goes_silent_mid_flood_is_replaced() {
    // Arrange: the daemon reaches the broker through a proxy; 1,200 records wait.
    let env = TestEnv::new().await;
    let lines = generated(1200, 11, 0.0, 0.0);
    env.publish_lines(&lines).await;
    let (host, port) = broker_addr();
    let proxy = Proxy::start(format!("{host}:{port}")).await;
    let url = url_via(proxy.port);
    let daemon = Daemon::start(env.settings(&[
        ("EDC__AMQP__URL", url.as_str()),
        ("EDC__AMQP__OPERATION_TIMEOUT", "2s"),
    ]));
    wait_for("a third stored", WAIT, || async {
        stored(&env).await >= 400
    })
    .await;

    // Act: the path from the broker dies without closing anything.
    proxy.cut();

    // Assert: the daemon notices, connects again and finishes; nothing twice, nothing lost. Missed
    // heartbeats (60 s negotiated, so two minutes of silence) are far slower than the deadline, and
    // the broker never gives back what it sent into the silence while the connection lives. The
    // deadline leaves room for a slow drain on a loaded machine: detection itself takes about 12 s.
    wait_for("all 1,200 stored after the cut", WAIT, || async {
        stored(&env).await == 1200
    })
    .await;
    let summary = daemon.stop().await;
    each_stored_once(&env, 1200).await;
    assert_eq!(summary.settled(), 1200 + summary.duplicate, "{summary}");
    env.cleanup().await;
}
