//! The RabbitMQ side: everything that talks to the broker.
//!
//! One message, from the socket to its ack:
//! ```text
//! consume    the supervisor: connect (fail-over, backoff), declare, consume two lanes, reconnect
//!   pump     a lane's deliveries into its slots, as `Inbound` values, one per delivery
//!   inbound  the delivery as the workers see it, read once; the hand-over point (`Feed`)
//!            ... the workers decide each delivery's `Fate` ...
//!   settle   the ONLY place that acks: ack | dead letter (confirmed) then ack | delay queue then
//!            ack | give back
//!   acks     one task per channel sends them in delivery order, coalesced into `multiple` acks
//! ```
//! [`topology`] declares the queues and exchanges; [`publish`] publishes with confirms; [`wire`] is
//! what an uploader can put in a content header, and the size of the copies we publish of one. Every
//! broker operation has a deadline ([`within`]): a broker that does not answer is an error like any
//! other.

pub mod acks;
pub mod consume;
pub mod inbound;
pub mod publish;
mod pump;
pub mod settle;
pub mod topology;
pub mod trace;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use lapin::types::{LongString, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use crate::config::{AmqpSettings, redact_url};
use crate::tls::{Files, TlsError, Verify, client_config};

pub use inbound::{Feed, Inbound, Intake};
pub use publish::confirm_channel;
pub use settle::{Fate, Settler};
pub use topology::declare;

/// A broker operation that failed, or got no answer within its deadline.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("{what}: {message}")]
    Failed { what: String, message: String },
    #[error("{what}: no answer from the broker within {limit:?}")]
    TimedOut { what: String, limit: Duration },
    /// The session this operation belonged to is gone (see [`in_session`]).
    #[error("{what}: the broker session is gone")]
    SessionGone { what: String },
    /// The broker confirmed a publish negatively, or returned it as unroutable.
    #[error("publish refused: {0}")]
    Refused(&'static str),
    /// An operation overran its deadline, so its session was dropped.
    #[error("{0}; the session is dropped")]
    Dropped(Box<BrokerError>),
}

impl BrokerError {
    pub fn failed(what: &str, message: impl std::fmt::Display) -> BrokerError {
        BrokerError::Failed {
            what: what.to_string(),
            message: message.to_string(),
        }
    }
}

/// Connects to the first node of `settings.url` (a comma-separated list) that answers within
/// `limit`, starting at `start` and wrapping around. Returns the connection and the index of the
/// node that answered. `amqps://` nodes use TLS with `settings.tls` (see [`BrokerTls`]).
pub async fn connect(
    settings: &AmqpSettings,
    start: usize,
    name: &str,
    limit: Duration,
) -> Result<(Connection, usize), BrokerError> {
    let nodes = settings.url.nodes();
    let tls = if nodes.iter().any(|n| n.starts_with("amqps://")) {
        Some(BrokerTls::new(settings).map_err(|e| BrokerError::failed("TLS settings", e))?)
    } else {
        None
    };
    let mut errors = Vec::new();
    for i in 0..nodes.len() {
        let idx = (start + i) % nodes.len();
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(name.to_string()));
        let node = redact_url(nodes[idx]);
        let uri = match tuned(nodes[idx]) {
            Ok(uri) => uri,
            Err(e) => {
                errors.push(format!("{node}: {e}"));
                continue;
            }
        };
        match within(limit, &node, open(uri, props, tls.as_ref())).await {
            Ok(conn) => return Ok((conn, idx)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(BrokerError::failed("connecting", errors.join("; ")))
}

/// The largest frame asked for, unless the URL asks otherwise (`?frame_max=`). lapin keeps 32
/// frames' worth of buffer each way per connection: at RabbitMQ's default of 128 KiB that is 8 MiB
/// per connection once traffic has gone round it (measured: 6 MB more peak RSS for the daemon, two
/// connections, draining 20,000 records). Bodies larger than a frame are split, as AMQP does for
/// every body. It bounds only what we send: RabbitMQ delivers a content-header frame as large as
/// its publisher's `frame_max` allowed, and the patched client accepts it (`vendor/README.md`);
/// the copies we publish are fitted to it ([`wire::fit`]).
const FRAME_MAX: u32 = 32 * 1024;

/// The AMQP heartbeat asked for, in seconds, unless the URL asks otherwise (`?heartbeat=`). The
/// broker proposes 60 s, and a connection whose far side vanishes without a reset (a node lost, a
/// network cut) is only given up after two missed heartbeats: measured, an event 3 minutes after a
/// cut with the broker's 60 s, 36 s with 10 s. Both sides pick the lower of the two proposals.
const HEARTBEAT_SECS: u16 = 15;

/// A node's URL as lapin connects to it, with [`FRAME_MAX`] and [`HEARTBEAT_SECS`] unless it says
/// otherwise.
fn tuned(node: &str) -> Result<AMQPUri, String> {
    let mut uri: AMQPUri = node.parse().map_err(|e: String| {
        // The parser's message can quote the URL: keep only that it failed.
        let _ = e;
        "not a valid AMQP URL".to_string()
    })?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
    Ok(uri)
}

/// TLS to the broker: the server's certificate must chain to `amqp.tls.ca_file` (else to the
/// system's store) and name the host of the URL. With a client certificate, the login is SASL
/// EXTERNAL (the broker takes the user from the certificate) unless the URL names a mechanism.
pub struct BrokerTls {
    config: Arc<rustls::ClientConfig>,
    external: bool,
}

impl BrokerTls {
    /// Reads the files of `amqp.tls`.
    pub fn new(settings: &AmqpSettings) -> Result<BrokerTls, TlsError> {
        let files = Files::read(&settings.tls, "amqp.tls")?;
        let external = files.identity.is_some();
        let config = client_config(Verify::Full, &files, "amqp.tls")?;
        Ok(BrokerTls {
            config: Arc::new(config),
            external,
        })
    }
}

/// SASL EXTERNAL: the identity is the client certificate, so nothing is sent (the trait's
/// defaults).
struct External;

impl lapin::auth::AuthProvider for External {}

/// Opens a connection to one node: lapin's own way for `amqp://`, over our rustls configuration
/// for `amqps://`.
async fn open(
    uri: AMQPUri,
    props: ConnectionProperties,
    tls: Option<&BrokerTls>,
) -> Result<Connection, String> {
    let Some(tls) = tls.filter(|_| uri.scheme == AMQPScheme::AMQPS) else {
        return Connection::connect_uri(uri, props)
            .await
            .map_err(|e| e.to_string());
    };
    let props = if tls.external && uri.query.auth_mechanism.is_none() {
        props.with_auth_provider(External)
    } else {
        props
    };
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    let config = tls.config.clone();
    Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let host = uri.authority.host.clone();
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), uri.authority.port))
                    .await?
                    .collect();
            let stream = lapin::tcp::AsyncTcpStream::connect(&runtime, addrs).await?;
            let connector = lapin::tcp::RustlsConnector::from(config.clone());
            Ok(stream.into_rustls(&connector, &host).await?)
        },
        props,
    )
    .await
    .map_err(|e| e.to_string())
}

/// Runs one broker operation with a deadline. lapin waits as long as the broker does; a connection
/// that is half dead, or a node that accepts a socket but never finishes starting, would hold the
/// caller for ever. An operation past its deadline is an error like any other broker failure.
pub async fn within<T, E: std::fmt::Display>(
    limit: Duration,
    what: &str,
    op: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(limit, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(BrokerError::failed(what, e)),
        Err(_) => Err(BrokerError::TimedOut {
            what: what.to_string(),
            limit,
        }),
    }
}

/// Runs one broker operation of a session within `limit`, giving up at once if the session is
/// already `broken`. An overrun marks it broken: the supervisor then drops it and connects again.
pub async fn in_session<T, E: std::fmt::Display>(
    broken: &CancellationToken,
    limit: Duration,
    what: &str,
    op: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, BrokerError> {
    let attempt = tokio::select! {
        biased;
        _ = broken.cancelled() => return Err(BrokerError::SessionGone { what: what.to_string() }),
        attempt = within(limit, what, op) => attempt,
    };
    attempt.map_err(|e| match e {
        e @ BrokerError::TimedOut { .. } => {
            broken.cancel();
            BrokerError::Dropped(Box::new(e))
        }
        other => other,
    })
}

/// Closes a connection, waiting at most `limit` for the broker's answer.
pub async fn close(connection: &Connection, limit: Duration, code: u16, reason: &str) {
    let closing = connection.close(code, ShortString::from(reason));
    let _ = within(limit, "close", closing).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_asks_for_small_frames_unless_its_url_says_otherwise() {
        let uri = tuned("amqp://u:p@h:5672/%2f").unwrap();
        assert_eq!(uri.query.frame_max, Some(FRAME_MAX));
        assert_eq!(uri.query.heartbeat, Some(HEARTBEAT_SECS));
        let uri = tuned("amqp://u:p@h:5672/%2f?frame_max=131072&heartbeat=60").unwrap();
        assert_eq!(uri.query.frame_max, Some(131072));
        assert_eq!(uri.query.heartbeat, Some(60));
        let err = tuned("amqp://u:secret@h:notaport/%2f").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[tokio::test]
    async fn an_operation_past_its_deadline_is_an_error_that_says_so() {
        let never = std::future::pending::<Result<(), String>>();
        let e = within(Duration::from_millis(10), "declare", never)
            .await
            .unwrap_err();
        assert!(matches!(e, BrokerError::TimedOut { .. }));
        assert_eq!(
            e.to_string(),
            "declare: no answer from the broker within 10ms"
        );
    }

    #[tokio::test]
    async fn an_overrun_breaks_the_session_and_later_operations_give_up_at_once() {
        let broken = CancellationToken::new();
        let never = std::future::pending::<Result<(), String>>();
        let e = in_session(&broken, Duration::from_millis(10), "ack", never)
            .await
            .unwrap_err();
        assert!(matches!(e, BrokerError::Dropped(_)), "{e}");
        assert!(broken.is_cancelled());
        let quick = async { Ok::<_, String>(()) };
        let e = in_session(&broken, Duration::from_secs(5), "nack", quick)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "nack: the broker session is gone");
    }

    #[tokio::test]
    async fn a_failed_operation_leaves_the_session_alone() {
        let broken = CancellationToken::new();
        let failing = async { Err::<(), _>("channel closed") };
        let e = in_session(&broken, Duration::from_secs(5), "ack", failing)
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "ack: channel closed");
        assert!(!broken.is_cancelled());
    }
}
