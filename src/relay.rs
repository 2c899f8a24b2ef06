//! The outbox relay: publishes what `ingest_records` wrote to the `outbox` table (events and result
//! callbacks) to RabbitMQ, with publisher confirms, then deletes it. Before each round it also
//! completes the upload batches whose outcomes are all in (`complete_batches()`), which adds their
//! `batch.completed` events.
//!
//! Exactly one relay publishes at a time, whatever the number of replicas: the one holding a
//! PostgreSQL advisory lock on its own connection (outside the pool). So rows go out in id order and
//! the events of one record keep their order. A crash between the confirm and the delete publishes
//! the same rows again, with the same `event_id` (the AMQP `message_id`), so consumers can drop
//! repeats. If the leader dies, its connection closes, the lock is released and another replica
//! takes over.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::maybe_done;

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation, ExchangeKind};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::broker::{self, BrokerError};
use crate::config::Settings;
use crate::stats::{EventKind, Stats};
use crate::store;

/// Advisory-lock key of the relay leader ("edc_outb").
const RELAY_LOCK: i64 = 0x6564_635f_6f75_7462;
/// Rows published per round.
const CHUNK: i64 = 500;

/// What the relay needs: the settings, its connection name, when to stop, and where to count.
struct Relay {
    settings: Settings,
    name: String,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
}

/// Runs until shutdown, then finishes the round in progress.
pub async fn run(settings: Settings, name: String, shutdown: CancellationToken, stats: Arc<Stats>) {
    let relay = Relay {
        settings,
        name,
        shutdown,
        stats,
    };
    let ctx = &relay;
    let mut wait = Duration::from_millis(200);
    while !ctx.shutdown.is_cancelled() {
        match lead(ctx).await {
            Ok(()) => wait = Duration::from_millis(200),
            Err(e) => {
                warn!(error = %e, retry_in = ?wait, "outbox relay interrupted; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.shutdown.cancelled() => return,
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Becomes the leader (or waits to), then relays until shutdown or an error.
async fn lead(ctx: &Relay) -> Result<(), String> {
    let pg = &ctx.settings.postgres;
    let mut client = store::connect(&pg.url, pg)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let result = async {
        loop {
            let locked: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&RELAY_LOCK])
                .await
                .map_err(|e| format!("database: {e}"))?
                .get(0);
            if locked {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = ctx.shutdown.cancelled() => return Ok(()),
            }
        }
        debug!("outbox relay: leading");
        relay(ctx, &mut client.client).await
    }
    .await;
    client.close().await;
    result
}

async fn relay(ctx: &Relay, client: &mut tokio_postgres::Client) -> Result<(), String> {
    let s = &ctx.settings.amqp;
    let limit = s.operation_timeout;
    let (connection, _) = broker::connect(&s.url, 0, &ctx.name, limit)
        .await
        .map_err(|e| e.to_string())?;
    let channel = broker::within(limit, "channel", broker::confirm_channel(&connection)).await;
    let result = async {
        let channel = channel.as_ref().map_err(BrokerError::to_string)?;
        let declare = channel.exchange_declare(
            ShortString::from(s.events_exchange.as_str()),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        );
        broker::within(limit, "declaring the events exchange", declare)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let sent = round(ctx, client, channel).await?;
            if sent > 0 {
                debug!(sent, "outbox relay: published");
            }
            if ctx.shutdown.is_cancelled() {
                return Ok(());
            }
            if sent < CHUNK as usize {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = ctx.shutdown.cancelled() => {}
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

/// One round: claim up to CHUNK rows, publish them, wait for every confirm, delete them.
async fn round(
    ctx: &Relay,
    client: &mut tokio_postgres::Client,
    channel: &lapin::Channel,
) -> Result<usize, String> {
    // Batches whose last outcome has committed get their batch.completed event now, behind the
    // events of their records.
    client
        .execute("SELECT complete_batches()", &[])
        .await
        .map_err(|e| format!("database: {e}"))?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| format!("database: {e}"))?;
    let rows = tx
        .query(
            "SELECT id, event_id, routing_key, reply_to, correlation_id,
                    (body || jsonb_build_object('event_id', event_id, 'occurred_at', created_at))::text
             FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&CHUNK],
        )
        .await
        .map_err(|e| format!("database: {e}"))?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut publishes = Vec::with_capacity(rows.len());
    let mut ids = Vec::with_capacity(rows.len());
    let mut callbacks = 0u64;
    for row in &rows {
        let id: i64 = row.get(0);
        let event_id: uuid::Uuid = row.get(1);
        let routing_key: &str = row.get(2);
        let reply_to: Option<&str> = row.get(3);
        let correlation_id: Option<&str> = row.get(4);
        let body: &str = row.get(5);
        let mut props = BasicProperties::default()
            .with_message_id(ShortString::from(event_id.to_string()))
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_type(ShortString::from(routing_key));
        if let Some(c) = correlation_id {
            props = props.with_correlation_id(ShortString::from(c));
        }
        // A callback goes to its reply queue through the default exchange; an event to the topic.
        let exchange = if reply_to.is_some() {
            callbacks += 1;
            ""
        } else {
            ctx.settings.amqp.events_exchange.as_str()
        };
        let mut publish = maybe_done(Box::pin(channel.basic_publish(
            ShortString::from(exchange),
            ShortString::from(routing_key),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )));
        // lapin queues a publish's frames on its first poll and completes it once its I/O thread
        // has written them. Polling each once here, in row order, keeps the events in order and
        // lets that thread write the whole round at once, instead of a thread round trip for each.
        let _ = futures::poll!(&mut publish);
        publishes.push(publish);
        ids.push(id);
    }
    let confirmed = async {
        let mut confirms = Vec::with_capacity(publishes.len());
        for mut publish in publishes {
            (&mut publish).await;
            let written = Pin::new(&mut publish).take_output();
            confirms.push(
                written
                    .expect("a completed publish")
                    .map_err(|e| e.to_string())?,
            );
        }
        for confirm in confirms {
            match confirm.await.map_err(|e| e.to_string())? {
                Confirmation::Ack(_) => {}
                other => return Err(format!("the broker did not confirm an event: {other:?}")),
            }
        }
        Ok::<_, String>(())
    };
    // Unconfirmed rows stay in the outbox (the transaction rolls back) and go out again.
    broker::within(ctx.settings.amqp.operation_timeout, "confirm", confirmed)
        .await
        .map_err(|e| e.to_string())?;
    tx.execute("DELETE FROM outbox WHERE id = ANY($1)", &[&ids])
        .await
        .map_err(|e| format!("database: {e}"))?;
    tx.commit().await.map_err(|e| format!("database: {e}"))?;
    let stats = &ctx.stats;
    stats.events_published(EventKind::Callback, callbacks);
    stats.events_published(EventKind::Event, ids.len() as u64 - callbacks);
    if ids.len() as i64 == CHUNK {
        info!(published = ids.len(), "outbox relay catching up");
    }
    Ok(ids.len())
}
