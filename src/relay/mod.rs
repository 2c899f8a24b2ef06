//! The outbox relay: publishes what the transactions wrote to the `outbox` table (events and result
//! callbacks) to RabbitMQ, with publisher confirms, then deletes it. Before each round it also
//! completes the upload batches whose outcomes are all in (`complete_batches()`), which adds their
//! `batch.completed` events.
//!
//! ```text
//! outbox row (one per transaction: its events in order) ──> one AMQP message per event, in order
//!   confirmed ──────────────────────────────────────────────> deleted with its round
//!   refused by the broker (nack; a callback nobody can take) ─> parked in outbox_parked, counted
//!   connection or channel lost ───────────────────────────────> the round rolls back, goes again
//! ```
//!
//! Exactly one relay publishes at a time, whatever the number of replicas: the one holding a
//! PostgreSQL advisory lock on its own connection (outside the pool). So rows go out in id order and
//! the events of one record keep their order. A crash between the confirm and the delete publishes
//! the same rows again, with the same `event_id` (the AMQP `message_id`), so consumers can drop
//! repeats. If the leader dies, its connection closes, the lock is released and another replica
//! takes over.
//!
//! A leader that vanishes without closing anything (its node lost, the network cut) is given up by
//! the server after `postgres.dead_peers` (keepalives, `tcp_user_timeout`: tens of seconds), which
//! ends its backend and so releases the lock. The relay, for its part, takes its connection for
//! dead when it stops answering: every statement on it has a bound (the heartbeat and the lock
//! request `relay_heartbeat`; a round's statements the server's own `statement_timeout` plus
//! `relay_heartbeat`), and every `relay_heartbeat` it checks that the lock is still its own. Past a
//! bound it drops the connection at once, without waiting for it, and relays again only once it
//! holds the lock on a new one. What it published meanwhile of the rows it had claimed is
//! published again by the next leader, with the same `event_id`s, as after a crash.
//!
//! One refused event never holds back the later ones (an `alert.raised` for a serious adverse event
//! behind a callback to a full queue, say): it is parked with its reason and counted, and the round
//! goes on.

mod event;
mod lock;

use event::{Event, refused};
pub use lock::RELAY_LOCK;
use lock::{bounded, still_leading};

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::maybe_done;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Confirmation, ExchangeKind};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::broker::{self, BrokerError};
use crate::config::Settings;
use crate::stats::{EventKind, Stats};
use crate::store::{self, ConnectError};

/// Outbox rows (transactions) claimed per round at most.
const ROWS: i64 = 32;
/// Events published per round at most (more only when one row alone holds more): a round's
/// publishes are held in memory, in lapin's buffers, until their confirms come back.
const EVENTS: i64 = 1024;

/// Why a round or a leadership ended.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(
        "the database connection did not answer {what} within {after:?}: taken as dead (postgres.dead_peers.relay_heartbeat)"
    )]
    Silent { what: &'static str, after: Duration },
    #[error("this connection no longer holds the relay lock")]
    LockLost,
    #[error("outbox row {0} is not an array of events: {1}")]
    Malformed(i64, serde_json::Error),
}

/// What the relay needs: the settings, its connection name, its counters and when to stop.
pub struct Relay {
    pub settings: Settings,
    pub name: String,
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
}

impl Relay {
    /// Runs until shutdown, then finishes the round in progress.
    pub async fn run(self) {
        let mut wait = Duration::from_millis(200);
        while !self.shutdown.is_cancelled() {
            match self.lead().await {
                Ok(()) => wait = Duration::from_millis(200),
                Err(e) => {
                    warn!(error = %e, retry_in = ?wait, "outbox relay interrupted; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shutdown.cancelled() => return,
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Becomes the leader (or waits to), then relays until shutdown or an error.
    async fn lead(&self) -> Result<(), RelayError> {
        let pg = &self.settings.postgres;
        let mut db = store::connect(&pg.url, pg).await?;
        let heartbeat = pg.dead_peers.relay_heartbeat;
        let result = async {
            let backend: i32 = loop {
                let row = bounded(
                    "the lock request",
                    heartbeat,
                    db.query_one(
                        "SELECT pg_try_advisory_lock($1), pg_backend_pid()",
                        &[&RELAY_LOCK],
                    ),
                )
                .await?;
                if row.get::<_, bool>(0) {
                    break row.get(1);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = self.shutdown.cancelled() => return Ok(()),
                }
            };
            info!(
                backend_pid = backend,
                "outbox relay: this replica relays events now"
            );
            self.relay(&mut db.client).await
        }
        .await;
        match &result {
            // Its I/O task would wait for the answers still owed, as long as TCP takes to give up.
            Err(RelayError::Silent { .. } | RelayError::LockLost) => db.abandon(),
            _ => db.close().await,
        }
        result
    }

    async fn relay(&self, db: &mut tokio_postgres::Client) -> Result<(), RelayError> {
        let s = &self.settings.amqp;
        let limit = s.operation_timeout;
        let (connection, _) = broker::connect(s, 0, &self.name, limit).await?;
        let channel = broker::within(limit, "channel", broker::confirm_channel(&connection)).await;
        let result = async {
            let channel = channel.as_ref().map_err(Clone::clone)?;
            let declare = channel.exchange_declare(
                ShortString::from(s.events_exchange.as_str()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            );
            broker::within(limit, "declaring the events exchange", declare).await?;
            let heartbeat = self.settings.postgres.dead_peers.relay_heartbeat;
            let mut checked = tokio::time::Instant::now();
            loop {
                if checked.elapsed() >= heartbeat {
                    still_leading(db, heartbeat).await?;
                    checked = tokio::time::Instant::now();
                }
                let (rows, events) = self.round(db, channel).await?;
                if events > 0 {
                    debug!(rows, events, "outbox relay: published");
                }
                if self.shutdown.is_cancelled() {
                    return Ok(());
                }
                // A round cut short by ROWS or EVENTS left more waiting: no pause then.
                if rows < ROWS as usize && events < EVENTS as usize {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = self.shutdown.cancelled() => {}
                    }
                }
            }
        }
        .await;
        broker::close(&connection, limit, 200, "relay done").await;
        // Only now: a channel dropped before its connection closes logs a spurious error.
        drop(channel);
        result
    }

    /// One round: claim up to ROWS rows (as many as make about EVENTS events), publish their events, wait for every confirm, park what
    /// was refused, delete the rows. Returns the rows and events done.
    async fn round(
        &self,
        db: &mut tokio_postgres::Client,
        channel: &lapin::Channel,
    ) -> Result<(usize, usize), RelayError> {
        // Batches whose last outcome has committed get their batch.completed event now, behind the
        // events of their records.
        // The server ends a statement at statement_timeout: no answer by then, and a heartbeat
        // more, means the connection is dead.
        let pg = &self.settings.postgres;
        let limit = pg.statement_timeout + pg.dead_peers.relay_heartbeat;
        bounded(
            "completing batches",
            limit,
            db.execute("SELECT complete_batches()", &[]),
        )
        .await?;
        let tx = bounded("BEGIN", limit, db.transaction()).await?;
        // Rows of both forms: one per transaction (`events`, V7) or one per event (before V7).
        // Each row comes as the text of its array of events, split here: PostgreSQL converts a row
        // once instead of taking every event apart field by field (half its cost of a round).
        let claim = tx.query(
            "WITH claimed AS (
                    SELECT id, coalesce(events, jsonb_build_array(jsonb_build_object(
                               'event_id', event_id, 'routing_key', routing_key,
                               'reply_to', reply_to, 'correlation_id', correlation_id,
                               'body', body || jsonb_build_object('event_id', event_id,
                                                                  'occurred_at', created_at))))
                           AS events
                    FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED),
                 sized AS (
                    SELECT id, events, sum(jsonb_array_length(events)) OVER (ORDER BY id)
                                       - jsonb_array_length(events) AS before
                    FROM claimed)
                 SELECT id, events::text FROM sized
                 WHERE before = 0 OR before < $2
                 ORDER BY id",
            &[&ROWS, &EVENTS],
        );
        let rows = bounded("claiming rows", limit, claim).await?;
        if rows.is_empty() {
            return Ok((0, 0));
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let mut events: Vec<Event> = Vec::new();
        for row in &rows {
            let text: String = row.get(1);
            events.extend(Event::all_of(&text).map_err(|e| RelayError::Malformed(row.get(0), e))?);
        }
        let confirms = self.publish(channel, &events).await?;
        let (mut parked, mut callbacks) = (0, 0);
        for (event, confirm) in events.iter().zip(confirms) {
            let Some(reason) = refused(confirm, event) else {
                callbacks += u64::from(event.reply_to.is_some());
                continue;
            };
            bounded(
                "parking an event",
                limit,
                tx.execute(
                    "INSERT INTO outbox_parked (reason, event) VALUES ($1, $2::text::jsonb)",
                    &[&reason, &event.raw],
                ),
            )
            .await?;
            warn!(%reason, event_id = %event.event_id, routing = event.kind(), "event refused by the broker: parked");
            parked += 1;
        }
        bounded(
            "deleting published rows",
            limit,
            tx.execute("DELETE FROM outbox WHERE id = ANY($1)", &[&ids]),
        )
        .await?;
        bounded("COMMIT", limit, tx.commit()).await?;
        let published = (events.len() - parked) as u64;
        self.stats.events_published(EventKind::Callback, callbacks);
        self.stats
            .events_published(EventKind::Event, published - callbacks);
        self.stats.events_parked.inc_by(parked as u64);
        if ids.len() as i64 == ROWS || events.len() as i64 >= EVENTS {
            info!(
                rows = ids.len(),
                events = events.len(),
                "outbox relay catching up"
            );
        }
        Ok((ids.len(), events.len()))
    }

    /// Publishes every event, in order, and waits for all the confirms together.
    async fn publish(
        &self,
        channel: &lapin::Channel,
        events: &[Event],
    ) -> Result<Vec<Confirmation>, RelayError> {
        let exchange = self.settings.amqp.events_exchange.as_str();
        let mut publishes = Vec::with_capacity(events.len());
        for e in events {
            // A callback goes to its reply queue through the default exchange, and must reach it
            // (mandatory); an event goes to the topic, where no subscriber is no error.
            let (exchange, mandatory) = match &e.reply_to {
                Some(_) => ("", true),
                None => (exchange, false),
            };
            let mut publish = maybe_done(Box::pin(channel.basic_publish(
                ShortString::from(exchange),
                ShortString::from(e.routing_key.as_str()),
                BasicPublishOptions {
                    mandatory,
                    ..Default::default()
                },
                e.body.as_bytes(),
                e.properties(),
            )));
            // lapin queues a publish's frames on its first poll and completes it once its I/O
            // thread has written them. Polling each once here, in order, keeps the events in order
            // and lets that thread write the whole round at once, instead of a thread round trip
            // for each.
            let _ = futures::poll!(&mut publish);
            publishes.push(publish);
        }
        let confirmed = async {
            let mut pending = Vec::with_capacity(publishes.len());
            for mut publish in publishes {
                (&mut publish).await;
                let written = Pin::new(&mut publish).take_output();
                pending.push(written.expect("a completed publish")?);
            }
            let mut confirms = Vec::with_capacity(pending.len());
            for confirm in pending {
                confirms.push(confirm.await?);
            }
            Ok::<_, lapin::Error>(confirms)
        };
        // Unconfirmed rows stay in the outbox (the transaction rolls back) and go out again.
        let limit = self.settings.amqp.operation_timeout;
        Ok(broker::within(limit, "publishing events", confirmed).await?)
    }
}
