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
//! Bounded: at most [`MAX_CONNECTIONS`] at once, each closed after one answer (no keep-alive) and
//! given [`CONNECTION_TIMEOUT`] in all, so a slow or idle client holds nothing for long. Nothing a
//! request says reaches a log line or a metric.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::failure::Failure;
use crate::stats::{self, Stats};

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// The longest one connection may take, from accept to the end of the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a client may take to send its request line and headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

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

async fn serve(listener: TcpListener, stats: Arc<Stats>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
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
        let stats = stats.clone();
        connections.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |request| {
                let response = respond(&stats, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(error = %e, "HTTP connection ended with an error"),
                Err(_) => debug!("HTTP connection timed out"),
            }
        });
    }
    connections.shutdown().await;
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
