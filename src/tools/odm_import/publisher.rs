//! Publishing with publisher confirms, as `publish` does: one connection, a confirm channel, the
//! daemon's queues declared, a bounded window of confirms awaited, only a broker `ack` counted.

use std::collections::VecDeque;

use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection, PublisherConfirm};

use crate::broker;
use crate::config::{AmqpSettings, RetrySettings};
use crate::tools::publish::{WINDOW, check};

pub struct Publisher {
    conn: Connection,
    /// Dropped after the connection's close (see `publish`: a channel dropped first logs a
    /// spurious error).
    channel: Option<Channel>,
    queue: ShortString,
    pending: VecDeque<PublisherConfirm>,
}

impl Publisher {
    /// Connects, opens a confirm channel and declares the queues.
    pub async fn open(settings: &AmqpSettings, retry: &RetrySettings) -> anyhow::Result<Publisher> {
        let (conn, _) = broker::connect(
            settings,
            0,
            "edc-ingest odm import",
            settings.operation_timeout,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach RabbitMQ: {e}"))?;
        let mut publisher = Publisher {
            conn,
            channel: None,
            queue: ShortString::from(settings.queue.as_str()),
            pending: VecDeque::new(),
        };
        let opened = async {
            let channel = broker::confirm_channel(&publisher.conn).await?;
            broker::declare(&channel, settings, retry).await?;
            Ok::<_, anyhow::Error>(channel)
        }
        .await;
        match opened {
            Ok(channel) => {
                publisher.channel = Some(channel);
                Ok(publisher)
            }
            Err(e) => {
                publisher.close().await;
                Err(e)
            }
        }
    }

    /// Publishes one message to the work queue; returns how many messages the broker confirmed
    /// meanwhile (the oldest, once the window is full).
    pub async fn send(&mut self, body: &[u8], props: BasicProperties) -> anyhow::Result<u64> {
        let channel = self.channel.as_ref().expect("opened with its channel");
        let confirm = channel
            .basic_publish(
                ShortString::from(""),
                self.queue.clone(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?;
        self.pending.push_back(confirm);
        if self.pending.len() >= WINDOW {
            let oldest = self.pending.pop_front().expect("non-empty");
            check(oldest.await?)?;
            return Ok(1);
        }
        Ok(0)
    }

    /// Awaits the confirms still pending (when `wait`), then closes; returns how many of them the
    /// broker confirmed.
    pub async fn finish(mut self, wait: bool) -> anyhow::Result<u64> {
        let mut confirmed = 0;
        let mut result = Ok(());
        if wait {
            while let Some(c) = self.pending.pop_front() {
                match c.await.map_err(anyhow::Error::from).and_then(check) {
                    Ok(()) => confirmed += 1,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
        }
        self.close().await;
        result.map(|()| confirmed)
    }

    async fn close(&mut self) {
        let _ = self.conn.close(200, ShortString::from("done")).await;
        self.pending.clear();
        self.channel.take();
    }
}
