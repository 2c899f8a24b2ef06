//! The HTTP listener (`http.listen`): what operators and orchestrators ask the daemon.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | every metric, Prometheus text format 0.0.4 ([`Stats::encode`]) |
//! | `/livez` | 200 `ok` while the daemon runs its loops, else 503 and why ([`crate::health`]) |
//! | `/readyz` | 200 `ready` while connected, consuming and the database gate is open, else 503 and why |
//!
//! GET and HEAD only; anything else is 404 or 405. It starts first, before the protocols load and
//! the migrations wait for the database, so liveness answers during start-up, and stops last, after
//! the drain, so `/readyz` says 503 through it. It runs on the daemon's own runtime thread: an answer
//! proves that thread is free (see `health`).
//!
//! Bounded, and never starved: the probes must answer however many connections others hold open
//! on the port, or the kubelet restarts a healthy pod.
//! - Every connection is accepted at once (none waits in the kernel's backlog behind idle ones).
//! - At most [`MAX_CONNECTIONS`] are served at once. At capacity, a new one evicts the oldest
//!   connection that has not finished sending its request head (an idle or a slowloris client);
//!   only if every one has, the oldest of all.
//! - A client has [`HEAD_TIMEOUT`] to send its request line and headers: a probe sends them at
//!   once, so more than that is an idle or a trickling connection, and it is closed.
//! - One request per connection (no keep-alive), [`CONNECTION_TIMEOUT`] in all.
//!
//! Nothing a request says reaches a log line or a metric.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::failure::Failure;
use crate::stats::{self, Stats};

/// Connections served at once; at capacity a new one evicts an older one (see the module's text).
pub const MAX_CONNECTIONS: usize = 32;
/// The longest one connection may take, from accept to the end of the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a client may take, from accept, to send its request line and headers.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// A running listener. Dropped, it stops too (a daemon that fails to start frees its port).
pub struct Listener {
    addr: SocketAddr,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Listener {
    /// Binds `addr` and serves until [`Listener::stop`]. A bind failure is the operator's to fix (a
    /// port taken, an address not on this machine): a setup failure, exit code 2.
    pub async fn start(addr: SocketAddr, stats: Arc<Stats>) -> Result<Listener, Failure> {
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            Failure::setup(format!(
                "http.listen {addr}: cannot listen there: {e} (set http.listen to a free address, or to \"\" to turn the listener off)"
            ))
        })?;
        let addr = listener.local_addr().unwrap_or(addr);
        info!(%addr, "HTTP listener: /metrics, /livez, /readyz");
        let stop = CancellationToken::new();
        let task = Some(tokio::spawn(serve(listener, stats, stop.clone())));
        Ok(Listener { addr, stop, task })
    }

    /// The address it listens on (with port 0, the port it was given).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends the connections still open and waits for the listener to end.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A connection being served: its task, and whether its request head has arrived.
struct Served {
    task: AbortHandle,
    head: Arc<AtomicBool>,
}

async fn serve(listener: TcpListener, stats: Arc<Stats>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    let mut served: VecDeque<Served> = VecDeque::with_capacity(MAX_CONNECTIONS);
    loop {
        while connections.try_join_next().is_some() {}
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    warn!(error = %e, "HTTP listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        served.retain(|c| !c.task.is_finished());
        if served.len() >= MAX_CONNECTIONS {
            // Oldest first: the first still waiting for its request head, else the first of all.
            let victim = served
                .iter()
                .position(|c| !c.head.load(Relaxed))
                .unwrap_or(0);
            if let Some(evicted) = served.remove(victim) {
                evicted.task.abort();
                debug!("HTTP listener at capacity: the oldest waiting connection was closed");
            }
        }
        let head = Arc::new(AtomicBool::new(false));
        let task = connections.spawn(connection(stream, stats.clone(), head.clone()));
        served.push_back(Served { task, head });
        // Let the connections read what has arrived (a probe's request comes with its connect)
        // before the next accept: a flood of new connections must not evict a probe whose
        // request is already in its socket, unread.
        tokio::task::yield_now().await;
    }
    connections.shutdown().await;
}

/// One connection: its request head within [`HEAD_TIMEOUT`] of the accept, the whole exchange
/// within [`CONNECTION_TIMEOUT`]. `head` is set when the request head has arrived.
async fn connection(stream: TcpStream, stats: Arc<Stats>, head: Arc<AtomicBool>) {
    let accepted = tokio::time::Instant::now();
    let received = head.clone();
    let service = service_fn(move |request| {
        received.store(true, Relaxed);
        let response = respond(&stats, &request);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let served = tokio::select! {
        done = &mut connection => Some(done),
        _ = tokio::time::sleep_until(accepted + HEAD_TIMEOUT) => None,
    };
    let served = match served {
        Some(done) => Ok(done),
        // No request head yet: an idle or a trickling client.
        None if !head.load(Relaxed) => {
            debug!("HTTP connection closed: no request within {HEAD_TIMEOUT:?}");
            return;
        }
        None => tokio::time::timeout_at(accepted + CONNECTION_TIMEOUT, connection).await,
    };
    match served {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "HTTP connection ended with an error"),
        Err(_) => debug!("HTTP connection timed out"),
    }
}

/// The answer to one request.
fn respond(stats: &Stats, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match request.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, stats.encode());
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(stats::CONTENT_TYPE));
            r
        }
        "/livez" => match stats.health.liveness() {
            Ok(()) => text(StatusCode::OK, "ok\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not alive: {why}\n"),
            ),
        },
        "/readyz" => match stats.health.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /metrics, /livez and /readyz are served\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
