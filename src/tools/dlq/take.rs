//! Taking dead letters and putting them back: a [`Session`] holds the letters a command took with
//! `basic.get` until it removes them (acks) or puts them back as copies, so that nothing is ever
//! returned to the queue (a return counts towards a quorum queue's delivery limit). The letters
//! taken together are looked up together ([`origin`]): who made each comes from the evidence, never
//! from its headers. A copy keeps the work queue the letter came from in `x-edc-queue`
//! ([`H_QUEUE`](super::H_QUEUE)), for `replay`, and the expiry the evidence gives it
//! ([`props::put_back`]).

use std::ops::Range;

use lapin::Confirmation;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions};
use lapin::types::ShortString;
use lapin::{Channel, Connection};
use serde_json::Value;

use crate::broker;
use crate::config::Settings;
use crate::pipeline;

use super::Filter;
use super::origin::{self, Origin, header};
use super::props::{self, Expiry};

/// A dead letter taken: the message, held unacked until it is removed or put back, who made it
/// (from its `rejections` row, else the broker's `x-death`; never from its `x-edc-*` headers), and
/// its body if it is a JSON object.
pub(super) struct Letter {
    pub(super) message: BasicGetMessage,
    pub(super) origin: Origin,
    pub(super) body: Option<Value>,
}

impl Letter {
    fn new(message: BasicGetMessage, origin: Origin) -> Letter {
        let body = serde_json::from_slice::<Value>(&message.delivery.data)
            .ok()
            .filter(Value::is_object);
        Letter {
            message,
            origin,
            body,
        }
    }

    /// As `dlq list` shows it and `--kind` selects it.
    pub(super) fn kind(&self) -> String {
        self.origin.kind()
    }

    pub(super) fn reason(&self) -> String {
        self.origin.reason()
    }

    pub(super) fn header(&self, name: &str) -> Option<String> {
        header(&self.message.delivery.properties, name)
    }

    pub(super) fn field(&self, name: &str) -> Option<String> {
        self.body.as_ref()?.get(name)?.as_str().map(str::to_string)
    }

    pub(super) fn batch_id(&self) -> Option<String> {
        self.body
            .as_ref()?
            .get("batch")?
            .get("id")?
            .as_str()
            .map(str::to_string)
    }

    /// The queue the message came from, as it says (see [`props::came_from`]): any name at all,
    /// which `replay` checks against the work queues.
    pub(super) fn queue(&self, settings: &Settings) -> String {
        let d = &self.message.delivery;
        props::came_from(
            &d.properties,
            d.routing_key.as_str(),
            &settings.amqp.dead_letter_queue,
        )
    }

    /// When a copy put back expires (see [`props::expiry`]).
    pub(super) fn expiry(&self, settings: &Settings) -> Expiry {
        props::expiry(
            &self.origin,
            &self.message.delivery.properties,
            settings.amqp.dead_letter_ttl,
        )
    }

    /// Selected by the filter; a letter whose origin is not known never is.
    pub(super) fn matches(&self, f: &Filter) -> bool {
        self.origin != Origin::Unverified
            && f.kind.as_ref().is_none_or(|k| *k == self.kind())
            && f.batch
                .as_ref()
                .is_none_or(|b| Some(b) == self.batch_id().as_ref())
    }

    /// The key of its `rejections` row: body hash and message id.
    fn key(&self) -> origin::Key {
        key(&self.message)
    }
}

fn key(m: &BasicGetMessage) -> origin::Key {
    let d = &m.delivery;
    let id = d.properties.message_id().as_ref().map(|m| m.to_string());
    (pipeline::sha256_hex(&d.data), id.unwrap_or_default())
}

/// An open look at the dead-letter queue: the messages taken, to be put back or removed, and a
/// channel in confirm mode to publish on.
pub(super) struct Session {
    connection: Connection,
    channel: Channel,
    pub(super) publisher: Channel,
    pub(super) letters: Vec<Letter>,
}

impl Session {
    /// Connects, with nothing taken yet.
    pub(super) async fn connect(settings: &Settings) -> anyhow::Result<Session> {
        let (connection, _) = broker::connect(
            &settings.amqp,
            0,
            "edc-ingest dlq",
            settings.amqp.operation_timeout,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach RabbitMQ: {e}"))?;
        let channel = connection.create_channel().await?;
        broker::declare(&channel, &settings.amqp, &settings.retry).await?;
        let publisher = broker::confirm_channel(&connection).await?;
        Ok(Session {
            connection,
            channel,
            publisher,
            letters: Vec::new(),
        })
    }

    /// Connects and takes up to `limit` dead letters, looking up who made them in `db`.
    pub(super) async fn open(
        settings: &Settings,
        db: &tokio_postgres::Client,
        limit: usize,
    ) -> anyhow::Result<Session> {
        let mut session = Session::connect(settings).await?;
        while session.letters.len() < limit {
            let want = (limit - session.letters.len()).min(origin::LOOKUP_BATCH);
            match session.take(settings, db, want).await {
                Ok(taken) if taken.len() == want => {}
                Ok(_) => break,
                Err(e) => return Err(session.fail(settings, e).await),
            }
        }
        Ok(session)
    }

    /// Takes up to `n` more dead letters (fewer once the queue is empty), held until
    /// [`Session::close`], and looks up who made them in one query; returns where they are in
    /// `letters`. If the look-up fails they are held all the same, as [`Origin::Unverified`], so that
    /// they are put back as taken.
    pub(super) async fn take(
        &mut self,
        settings: &Settings,
        db: &tokio_postgres::Client,
        n: usize,
    ) -> anyhow::Result<Range<usize>> {
        let from = self.letters.len();
        let mut taken = Vec::new();
        while taken.len() < n {
            let got = self
                .channel
                .basic_get(
                    ShortString::from(settings.amqp.dead_letter_queue.as_str()),
                    BasicGetOptions { no_ack: false },
                )
                .await;
            match got {
                Ok(Some(message)) => taken.push(message),
                Ok(None) => break,
                Err(e) => {
                    self.hold(taken, None);
                    return Err(e.into());
                }
            }
        }
        let keys: Vec<origin::Key> = taken.iter().map(key).collect();
        match origin::look_up(db, &keys).await {
            Ok(mut rows) => {
                let rows = keys.iter().map(|k| rows.remove(k)).collect();
                self.hold(taken, Some(rows));
                Ok(from..self.letters.len())
            }
            Err(e) => {
                self.hold(taken, None);
                Err(e)
            }
        }
    }

    /// Holds the messages taken, with their rows if they were looked up.
    fn hold(&mut self, taken: Vec<BasicGetMessage>, rows: Option<Vec<Option<origin::Rejection>>>) {
        let mut rows = rows.map(Vec::into_iter);
        for message in taken {
            let origin = match rows.as_mut() {
                Some(rows) => {
                    let row = rows.next().flatten();
                    Origin::of(row, &message.delivery.properties)
                }
                None => Origin::Unverified,
            };
            self.letters.push(Letter::new(message, origin));
        }
    }

    /// Puts back what is held after `error`, and returns the error (with the put-back's own, if it
    /// failed too).
    pub(super) async fn fail(self, settings: &Settings, error: anyhow::Error) -> anyhow::Error {
        match self.close(settings).await {
            Ok(()) => error,
            Err(e) => anyhow::anyhow!("{error:#}; {e:#}"),
        }
    }

    /// Puts back every letter not removed, then closes. A letter goes back as a copy: the body and
    /// properties as taken, less an uploader's `user_id` and with the expiry the evidence gives it
    /// ([`props::put_back`]), published to the dead-letter queue with a confirm; only once the copy
    /// is confirmed is the original acked. Nothing is ever returned to the queue, because RabbitMQ 4
    /// counts every return (a requeue, a closed channel) towards a quorum queue's delivery limit,
    /// 20 unless declared, and drops a dead letter past it: the dead-letter queue has no dead-letter
    /// exchange. A copy starts with no deliveries. The copies are published together, in the order
    /// taken, then their confirms are awaited in that order (a confirm per copy awaited before the
    /// next publish costs a quorum commit each, about 5 ms). A failure between a copy and its ack
    /// leaves a repeat, never a loss; a letter whose copy was not confirmed returns with the
    /// connection.
    pub(super) async fn close(self, settings: &Settings) -> anyhow::Result<()> {
        let queue = settings.amqp.dead_letter_queue.as_str();
        let mut copies = Vec::new();
        let mut put_back = Ok(());
        for l in self
            .letters
            .iter()
            .filter(|l| l.message.delivery.acker.usable())
        {
            let d = &l.message.delivery;
            let props = props::put_back(
                &d.properties,
                d.routing_key.as_str(),
                queue,
                l.expiry(settings),
                chrono::Utc::now(),
            );
            let options = BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            };
            match self
                .publisher
                .basic_publish(
                    "".into(),
                    queue.into(),
                    options,
                    &d.data,
                    broker::wire::fit(props, self.publisher.frame_max()),
                )
                .await
            {
                Ok(confirm) => copies.push((d, confirm)),
                Err(e) => {
                    put_back = Err(anyhow::anyhow!("publish failed: {e}"));
                    break;
                }
            }
        }
        for (d, confirm) in copies {
            match confirm.await {
                Ok(Confirmation::Ack(None)) => {
                    d.acker.ack(BasicAckOptions::default()).await?;
                }
                Ok(other) => {
                    put_back = Err(anyhow::anyhow!("the broker did not take a copy: {other:?}"));
                    break;
                }
                Err(e) => {
                    put_back = Err(anyhow::anyhow!("publish confirm failed: {e}"));
                    break;
                }
            }
        }
        let _ = self.connection.close(200, ShortString::from("done")).await;
        drop((self.channel, self.publisher));
        put_back.map_err(|e| {
            e.context(format!(
                "putting dead letters back into {queue} failed; those not put back return to the \
                 queue with the connection"
            ))
        })
    }
}

/// Which dead letter a letter is, across sessions: its body's hash and its message id.
pub(super) fn identity(l: &Letter) -> String {
    let (hash, id) = l.key();
    format!("{hash}:{id}")
}
