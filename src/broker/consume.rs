//! The supervisor: keeps one AMQP session alive and its two lanes consuming.
//!
//! ```text
//!  connect (fail-over across nodes, backoff + jitter) -> declare -> two consumers on one channel:
//!     urgent lane  (edc.records.urgent, prefetch 1)   --> urgent slot  --+
//!     normal lane  (edc.records, prefetch = the rest)  --> normal slots --+--> the workers (Feed)
//!  session lost -> reconnect;  database gate closed -> cancel both, give back, wait, consume again
//! ```
//!
//! Flow control: the two consumers' prefetch add up to `workers x batch_size` (with one worker, the
//! urgent lane adds its one delivery on top), so that many deliveries at most are unacked and nothing
//! piles up in memory whatever the backlog. RabbitMQ 3.10 quorum queues have no priorities, so the
//! fast lane is its own queue: an urgent record is delivered at once into its own slot and the next
//! free worker takes it before any normal work.
//!
//! A delivery remembers the session it came from; if that session dies, its ack fails harmlessly: the
//! data committed, and the redelivery is recognised as a duplicate.
//!
//! A session is whole or replaced: when the broker closes any of its channels (the publisher's on a
//! refused copy, the consumer's on a refused ack) or the connection reports an error, the session
//! is broken at once ([`watch_session`]) and the supervisor connects again and declares the topology
//! again. A channel the broker closed never comes back, and every operation on it would fail.
//!
//! Shutdown: [`Supervisor::run`] returns as soon as shutdown is asked, with both consumers cancelled
//! (`basic.cancel`) and what was delivered but not handed over given back. The caller lets the
//! workers finish, gives back what they never took, then closes the session ([`Session::close`]).

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::inbound::{Inbound, Intake, Link};
use super::pump::{End, Pumps, lane_prefetch, pump};
use super::settle::Settler;
use super::{BrokerError, close, confirm_channel, connect, declare, within};
use crate::config::Settings;
use crate::lane::Lane;
use crate::stats::Stats;

/// What the supervisor needs from the daemon.
pub struct Supervisor {
    pub settings: Settings,
    /// Whether the database is usable (see `store::gate`): consumption pauses while it is not.
    pub gate: watch::Receiver<bool>,
    pub shutdown: CancellationToken,
    pub stats: Arc<Stats>,
    pub settler: Arc<Settler>,
    /// `host:pid`: the connection's name and the consumer tags' prefix.
    pub name: String,
}

/// A live session: the connection, its consuming channel and the two consumers.
pub struct Session {
    connection: Connection,
    channel: Channel,
    pub(super) link: Arc<Link>,
    urgent: lapin::Consumer,
    normal: lapin::Consumer,
    tags: Vec<String>,
    base_tag: String,
    /// Consumer pairs started on this channel so far (one more after each database pause).
    generation: u32,
}

impl Supervisor {
    /// Consumes until shutdown. Returns the last session, its consumers cancelled, for the caller
    /// to close once the workers are done.
    ///
    /// Health: it says when it is connected and consuming (readiness), and beats as it turns
    /// (liveness; see [`Supervisor::stall_limit`]).
    pub async fn run(&self, intake: Intake) -> Option<Session> {
        self.stats.health.supervising(self.stall_limit());
        let session = self.run_sessions(intake).await;
        self.stats.health.supervisor_done();
        session
    }

    /// The longest the supervisor may go without a beat and still be turning: a lost session
    /// closed, the longest backoff, then a new one opened (a connect per node and the set-up), or
    /// a pause's two cancels and its resume; every step is bounded by `amqp.operation_timeout`.
    /// 155 s with the defaults and one node.
    pub fn stall_limit(&self) -> Duration {
        let amqp = &self.settings.amqp;
        let nodes = amqp.url.expose().split(',').count() as u32;
        amqp.operation_timeout * (nodes + 4) + amqp.reconnect_max
    }

    async fn run_sessions(&self, intake: Intake) -> Option<Session> {
        let amqp = &self.settings.amqp;
        let health = &self.stats.health;
        let mut node = 0;
        let mut sessions = 0u64;
        let mut wait = amqp.reconnect_initial;
        while !self.shutdown.is_cancelled() {
            health.beat();
            sessions += 1;
            if sessions > 1 {
                self.stats.broker_reconnects.inc();
            }
            let mut session = match self.open(node, sessions).await {
                Ok((s, idx)) => {
                    node = idx;
                    wait = amqp.reconnect_initial;
                    s
                }
                Err(e) => {
                    let jittered = jitter(wait);
                    warn!(error = %e, retry_in = ?jittered, "cannot reach RabbitMQ; retrying");
                    node += 1;
                    health.beat();
                    tokio::select! {
                        _ = tokio::time::sleep(jittered) => {}
                        _ = self.shutdown.cancelled() => break,
                    }
                    wait = (wait * 2).min(amqp.reconnect_max);
                    continue;
                }
            };
            self.stats.broker_sessions.inc();
            health.broker_connected(true);
            health.consuming(true);
            info!(tags = ?session.tags, prefetch = self.settings.prefetch(), queue = %amqp.queue,
                  urgent_queue = %amqp.urgent_queue, "consuming");
            match self.consume(&mut session, &intake).await {
                End::Shutdown => {
                    // Stop intake first; the caller drains.
                    health.consuming(false);
                    self.stop_consumers(&mut session).await;
                    return Some(session);
                }
                End::Paused => unreachable!("pauses are handled in consume"),
                End::Lost(e) => {
                    health.broker_connected(false);
                    warn!(error = %e, "lost the broker session; reconnecting");
                    // Deliveries of this session stop waiting on it: they come back anyway.
                    session.link.break_session(e);
                    close(
                        &session.connection,
                        amqp.operation_timeout,
                        320,
                        "session lost",
                    )
                    .await;
                }
            }
        }
        None
    }

    /// Pumps both lanes until the session ends; pauses and resumes them around database outages.
    async fn consume(&self, session: &mut Session, intake: &Intake) -> End {
        loop {
            let end = {
                let link = session.link.clone();
                let channel = &session.channel;
                let pumps = Pumps {
                    settings: &self.settings,
                    gate: &self.gate,
                    shutdown: &self.shutdown,
                    health: &self.stats.health,
                };
                tokio::select! {
                    end = pump(&pumps, Lane::Urgent, &mut session.urgent, &intake.urgent, &link, channel) => end,
                    end = pump(&pumps, Lane::Normal, &mut session.normal, &intake.normal, &link, channel) => end,
                }
            };
            match end {
                End::Paused => {
                    if let Err(end) = self.pause(session).await {
                        return end;
                    }
                }
                other => return other,
            }
        }
    }

    /// The database is unavailable: cancel the consumers, give back what was delivered but not
    /// handed over, wait for the gate to open, then consume again.
    async fn pause(&self, session: &mut Session) -> Result<(), End> {
        let health = &self.stats.health;
        health.consuming(false);
        self.stop_consumers(session).await;
        let mut gate = self.gate.clone();
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        loop {
            health.beat();
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(End::Shutdown),
                opened = gate.wait_for(|open| *open) => match opened {
                    Ok(_) => break,
                    Err(_) => return Err(End::Shutdown),
                },
                _ = heartbeat.tick() => {}
            }
        }
        session.generation += 1;
        let resume = self.start_consumers(&session.channel, &session.base_tag, session.generation);
        let limit = self.settings.amqp.operation_timeout;
        match within(limit, "resuming the consumers", resume).await {
            Ok((urgent, normal, tags)) => {
                session.urgent = urgent;
                session.normal = normal;
                session.tags = tags;
                health.consuming(true);
                info!(tags = ?session.tags, "consuming again");
                Ok(())
            }
            Err(e) => Err(End::Lost(e.to_string())),
        }
    }

    /// basic.cancel both consumers, then give back the deliveries the broker already sent.
    async fn stop_consumers(&self, s: &mut Session) {
        let limit = self.settings.amqp.operation_timeout;
        for tag in &s.tags {
            let cancel = s.channel.basic_cancel(
                ShortString::from(tag.as_str()),
                BasicCancelOptions::default(),
            );
            let _ = within(limit, "basic.cancel", cancel).await;
        }
        for (lane, consumer) in [(Lane::Urgent, &mut s.urgent), (Lane::Normal, &mut s.normal)] {
            while let Ok(Some(Ok(delivery))) =
                tokio::time::timeout(Duration::from_millis(200), consumer.next()).await
            {
                let d = Inbound::new(delivery, lane, s.link.clone());
                self.settler.give_back(d);
            }
        }
    }

    /// Starts the two consumers; `basic.qos` before each sets that consumer's own prefetch.
    async fn start_consumers(
        &self,
        channel: &Channel,
        base_tag: &str,
        generation: u32,
    ) -> lapin::Result<(lapin::Consumer, lapin::Consumer, Vec<String>)> {
        let s = &self.settings.amqp;
        let (urgent_prefetch, normal_prefetch) = lane_prefetch(self.settings.prefetch());
        let mut consumers = Vec::new();
        let mut tags = Vec::new();
        for (queue, prefetch, lane) in [
            (&s.urgent_queue, urgent_prefetch, Lane::Urgent),
            (&s.queue, normal_prefetch, Lane::Normal),
        ] {
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            let tag = format!("{base_tag}.{}.{generation}", lane.as_str());
            consumers.push(
                channel
                    .basic_consume(
                        ShortString::from(queue.as_str()),
                        ShortString::from(tag.as_str()),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?,
            );
            tags.push(tag);
        }
        let normal = consumers.pop().expect("two consumers");
        let urgent = consumers.pop().expect("two consumers");
        Ok((urgent, normal, tags))
    }

    async fn open(&self, node: usize, n: u64) -> Result<(Session, usize), BrokerError> {
        let s = &self.settings.amqp;
        let limit = s.operation_timeout;
        let (connection, idx) = connect(s, node, &self.name, limit).await?;
        // Listening before any channel opens: the connection only reports to listeners it has.
        let events = connection.events_listener();
        let base_tag = format!("{}#{n}", self.name);
        let setup = async {
            let channel = connection.create_channel().await?;
            declare(&channel, s, &self.settings.retry).await?;
            let publisher = confirm_channel(&connection).await?;
            let (urgent, normal, tags) = self.start_consumers(&channel, &base_tag, 0).await?;
            Ok::<_, lapin::Error>((channel, publisher, urgent, normal, tags))
        };
        match within(limit, "setting up the session", setup).await {
            Ok((channel, publisher, urgent, normal, tags)) => {
                let link = Arc::new(Link::new(
                    publisher,
                    limit,
                    self.stats.clone(),
                    self.settler.seal.clone(),
                ));
                tokio::spawn(watch_session(events, link.clone()));
                Ok((
                    Session {
                        connection,
                        channel,
                        link,
                        urgent,
                        normal,
                        tags,
                        base_tag,
                        generation: 0,
                    },
                    idx,
                ))
            }
            Err(e) => {
                close(&connection, limit, 320, "setup failed").await;
                Err(e)
            }
        }
    }
}

impl Session {
    /// Sends the acks still held, then closes the connection, which closes its channels; anything
    /// still unacked returns to the queue. The session (and so its channels) is dropped only after
    /// that, so no channel is half-closed first.
    pub async fn close(self, limit: Duration) {
        self.link.acks.flush().await;
        close(&self.connection, limit, 200, "shutdown").await;
        self.link.stats.health.broker_connected(false);
        // Ends its watcher and its ack task.
        self.link.break_session("closed");
    }
}

/// Breaks the session when its connection reports an error: the broker closed one of its channels
/// (lapin reports a channel the broker closed as an error of the connection) or the connection
/// itself. Ends with the session, or when the connection is gone.
async fn watch_session(events: impl Stream<Item = lapin::Event>, link: Arc<Link>) {
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            _ = link.broken.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            Some(lapin::Event::Error(e)) => {
                warn!(error = %e, "the broker closed a channel or the connection; replacing the session");
                link.break_session(format!("the broker closed a channel: {e}"));
                return;
            }
            Some(_) => {}
            None => return,
        }
    }
}

fn jitter(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.5..1.0);
    d.mul_f64(factor)
}
