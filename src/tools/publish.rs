//! `edc-ingest publish`: the uploader's side. Sends each NDJSON line as one persistent message to the
//! work queue, with publisher confirms; a line is only counted once the broker confirmed it. Each
//! message carries its time of publication (see [`stamped`]).

use std::collections::VecDeque;
use std::io::BufRead;

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{Confirmation, PublisherConfirm};

use crate::broker;
use crate::broker::publish::stamped;
use crate::config::{AmqpSettings, RetrySettings};

use super::progress::Progress;

/// Confirms awaited at once: enough to keep the broker busy, bounded so memory stays flat.
pub(super) const WINDOW: usize = 512;

pub async fn publish(
    settings: &AmqpSettings,
    retry: &RetrySettings,
    input: impl BufRead,
) -> anyhow::Result<u64> {
    publish_with_progress(settings, retry, input, &Progress::hidden()).await
}

/// As [`publish`], counting each message on `progress` once the broker confirmed it.
pub async fn publish_with_progress(
    settings: &AmqpSettings,
    retry: &RetrySettings,
    input: impl BufRead,
    progress: &Progress,
) -> anyhow::Result<u64> {
    let (conn, _) = broker::connect(
        settings,
        0,
        "edc-ingest publish",
        settings.operation_timeout,
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot reach RabbitMQ: {e}"))?;
    // The channel outlives the connection's close: dropping a channel starts closing it, and a
    // connection closed in the middle of that logs a spurious error.
    let mut channel = None;
    let result = async {
        let ch = channel.insert(broker::confirm_channel(&conn).await?);
        broker::declare(ch, settings, retry).await?;
        let channel = &*ch;
        let mut pending: VecDeque<PublisherConfirm> = VecDeque::new();
        let mut sent = 0u64;
        for line in input.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let props = stamped(
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type(ShortString::from("application/json"))
                    .with_message_id(ShortString::from(uuid::Uuid::new_v4().to_string())),
            );
            let confirm = channel
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(settings.queue.as_str()),
                    BasicPublishOptions::default(),
                    line.as_bytes(),
                    props,
                )
                .await?;
            pending.push_back(confirm);
            if pending.len() >= WINDOW {
                check(pending.pop_front().expect("non-empty").await?)?;
                progress.inc(1);
            }
            sent += 1;
        }
        while let Some(c) = pending.pop_front() {
            check(c.await?)?;
            progress.inc(1);
        }
        progress.finish();
        Ok::<_, anyhow::Error>(sent)
    }
    .await;
    let _ = conn.close(200, ShortString::from("done")).await;
    drop(channel);
    result
}

/// Only a broker `ack` counts.
pub(super) fn check(c: Confirmation) -> anyhow::Result<()> {
    match c {
        Confirmation::Ack(_) => Ok(()),
        other => anyhow::bail!("broker did not confirm a message: {other:?}"),
    }
}
