//! Taking dead letters and putting them back: a [`Session`] holds the letters a command took with
//! `basic.get` until it removes them (acks) or puts them back as copies, so that nothing is ever
//! returned to the queue (a return counts towards a quorum queue's delivery limit). A copy keeps the
//! work queue the letter came from in `x-edc-queue` ([`H_QUEUE`]), for `replay`.

use lapin::Confirmation;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use serde_json::Value;

use crate::broker;
use crate::broker::publish::{H_ERROR, H_EXPIRES_AT, H_KIND};
use crate::config::Settings;
use crate::pipeline;

use super::{Filter, H_QUEUE, UNKNOWN};

/// A dead letter taken: the message, held unacked until it is removed or put back, its kind and
/// reason (from our headers, else the broker's `x-death`), and its body if it is a JSON object.
pub(super) struct Letter {
    pub(super) message: lapin::message::BasicGetMessage,
    pub(super) kind: String,
    pub(super) reason: String,
    pub(super) body: Option<Value>,
}

impl Letter {
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

    /// The work queue the message came from: the routing key it was dead-lettered with, kept in
    /// [`H_QUEUE`] on the copies put back (which are published to the dead-letter queue itself).
    pub(super) fn queue(&self) -> String {
        self.header(H_QUEUE)
            .unwrap_or_else(|| self.message.delivery.routing_key.to_string())
    }

    pub(super) fn matches(&self, f: &Filter) -> bool {
        f.kind.as_ref().is_none_or(|k| *k == self.kind)
            && f.batch
                .as_ref()
                .is_none_or(|b| Some(b) == self.batch_id().as_ref())
    }
}

/// A header's value as text (a value of another type as the broker library shows it).
fn header(props: &BasicProperties, name: &str) -> Option<String> {
    let v = props.headers().as_ref()?.inner().get(name)?;
    Some(as_text(v).unwrap_or_else(|| format!("{v:?}")))
}

/// A text or integer value as text; None for any other type.
fn as_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        _ => None,
    }
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

    /// Connects and takes up to `limit` dead letters.
    pub(super) async fn open(settings: &Settings, limit: usize) -> anyhow::Result<Session> {
        let mut session = Session::connect(settings).await?;
        while session.letters.len() < limit {
            match session.take(settings).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(session.fail(settings, e).await),
            }
        }
        Ok(session)
    }

    /// Takes the next dead letter, if there is one (held until [`Session::close`]).
    pub(super) async fn take(&mut self, settings: &Settings) -> anyhow::Result<Option<&Letter>> {
        let got = self
            .channel
            .basic_get(
                ShortString::from(settings.amqp.dead_letter_queue.as_str()),
                BasicGetOptions { no_ack: false },
            )
            .await?;
        let Some(message) = got else { return Ok(None) };
        let props = &message.delivery.properties;
        let kind = header(props, H_KIND)
            .or_else(|| death_reason(props).map(|r| format!("broker:{r}")))
            .unwrap_or_else(|| UNKNOWN.into());
        let reason = header(props, H_ERROR).unwrap_or_else(|| "dead-lettered by the broker".into());
        let body = serde_json::from_slice::<Value>(&message.delivery.data)
            .ok()
            .filter(Value::is_object);
        self.letters.push(Letter {
            message,
            kind,
            reason,
            body,
        });
        Ok(self.letters.last())
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
    /// properties as taken, published to the dead-letter queue with a confirm; only once the copy
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
                    as_taken(d, queue),
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

/// The properties of a dead letter as taken, for its copy: without `x-delivery-count`, which the
/// broker adds on a redelivery and which would otherwise travel in the copy as a header of its own;
/// and, for a dead letter kept for `amqp.dead_letter_ttl`, expiring when the original would have.
fn as_taken(d: &lapin::message::Delivery, dead_letter_queue: &str) -> BasicProperties {
    let mut props = d.properties.clone();
    if header(&props, H_QUEUE).is_none() && d.routing_key.as_str() != dead_letter_queue {
        let mut headers = props.headers().clone().unwrap_or_default();
        headers.insert(
            H_QUEUE.into(),
            AMQPValue::LongString(d.routing_key.as_str().into()),
        );
        props = props.with_headers(headers);
    }
    if let Some(ends) =
        header(&props, H_EXPIRES_AT).and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
    {
        let left = (ends.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .num_milliseconds()
            .max(1);
        props = props.with_expiration(ShortString::from(left.to_string()));
    }
    if let Some(headers) = props.headers().as_ref()
        && headers.inner().contains_key("x-delivery-count")
    {
        let mut kept = FieldTable::default();
        for (k, v) in headers.inner() {
            if k.as_str() != "x-delivery-count" {
                kept.insert(k.clone(), v.clone());
            }
        }
        props = props.with_headers(kept);
    }
    props
}

/// Which dead letter a letter is, across sessions: its body's hash and its message id.
pub(super) fn identity(l: &Letter) -> String {
    let d = &l.message.delivery;
    let id = d.properties.message_id().as_ref().map(|m| m.to_string());
    format!(
        "{}:{}",
        pipeline::sha256_hex(&d.data),
        id.unwrap_or_default()
    )
}

/// The broker's own reason (x-death), for a message it dead-lettered itself (the delivery limit).
fn death_reason(props: &BasicProperties) -> Option<String> {
    let deaths = props.headers().as_ref()?.inner().get("x-death")?.clone();
    let AMQPValue::FieldArray(deaths) = deaths else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()?.clone() else {
        return None;
    };
    as_text(first.inner().get("reason")?)
}
