//! A test's traffic with the broker: queues it declares, publishes with confirms, draining, and
//! RabbitMQ's management API.

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};

use super::{TestEnv, amqp, kit};

impl TestEnv {
    /// Declares a queue bound to this test's events exchange with `routing_key` (e.g. `#`); the
    /// exchange is declared too, so binding works before the daemon starts.
    pub async fn listen_events(&self, routing_key: &str) -> String {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let queue = format!(
            "{}.events.{}",
            self.queue,
            routing_key.replace(['#', '*'], "all")
        );
        ch.exchange_declare(
            ShortString::from(self.events_exchange()),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        // A quorum queue, like the daemon's: a classic queue on a stopped node would silently miss
        // events (the cluster scenario stops nodes).
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        ch.queue_declare(
            ShortString::from(queue.as_str()),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
        ch.queue_bind(
            ShortString::from(queue.as_str()),
            ShortString::from(self.events_exchange()),
            ShortString::from(routing_key),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        conn.close(200, ShortString::from("bye")).await.unwrap();
        self.made.lock().unwrap().push(queue.clone());
        queue
    }

    /// Declares a plain durable queue (for answers, say).
    pub async fn declare_queue(&self, name: &str) {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            ShortString::from(name),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        conn.close(200, ShortString::from("bye")).await.unwrap();
        self.made.lock().unwrap().push(name.to_string());
    }

    pub async fn delete_queue(&self, name: &str) {
        let conn = amqp().await;
        let _ = kit::broker::delete(&conn, &[name.to_string()], &[]).await;
        let _ = conn.close(200, ShortString::from("bye")).await;
    }

    /// Takes every message from a queue (acking them).
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            out.push(m);
        }
        conn.close(200, ShortString::from("bye")).await.unwrap();
        out
    }

    /// Publishes raw bodies, each with the given message id, and waits for the broker's confirms.
    pub async fn publish<S: AsRef<str>>(&self, bodies: &[(S, Vec<u8>)]) {
        self.publish_declared(&[], bodies).await;
    }

    /// The same, with the topology declared as the daemon would with `extra` settings (a queue's
    /// arguments must match every later declaration of it).
    pub async fn publish_declared<S: AsRef<str>>(
        &self,
        extra: &[(&str, &str)],
        bodies: &[(S, Vec<u8>)],
    ) {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let settings = self.settings(extra);
        edc_ingest::broker::declare(&ch, &settings.amqp, &settings.retry)
            .await
            .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for (id, body) in bodies {
            let id = id.as_ref();
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type(ShortString::from("application/json"))
                .with_message_id(ShortString::from(id))
                .with_correlation_id(ShortString::from(format!("corr-{id}")));
            let confirm = ch
                .basic_publish(
                    ShortString::from(""),
                    ShortString::from(self.queue.as_str()),
                    BasicPublishOptions::default(),
                    body,
                    props,
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack(), "broker confirmed the test message");
        }
        conn.close(200, ShortString::from("bye")).await.unwrap();
    }

    /// Publishes one body with the given properties to the work queue (the lane's queue if
    /// `queue` is given), and waits for the broker's confirm.
    pub async fn publish_with(&self, body: &[u8], props: BasicProperties) {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let settings = self.settings(&[]);
        edc_ingest::broker::declare(&ch, &settings.amqp, &settings.retry)
            .await
            .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let confirm = ch
            .basic_publish(
                ShortString::from(""),
                ShortString::from(self.queue.as_str()),
                BasicPublishOptions::default(),
                body,
                props.with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "broker confirmed the test message");
        conn.close(200, ShortString::from("bye")).await.unwrap();
    }

    /// Publishes NDJSON lines, message id = line number.
    pub async fn publish_lines(&self, lines: &[String]) {
        let bodies: Vec<(String, Vec<u8>)> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("m{i}"), l.clone().into_bytes()))
            .collect();
        self.publish(&bodies).await;
    }

    /// Takes every message from the dead-letter queue (acking them).
    pub async fn drain_dlq(&self) -> Vec<lapin::message::BasicGetMessage> {
        self.drain(&self.dlq).await
    }
}

/// GET on RabbitMQ's management API (guest/guest on loopback), parsed as JSON (null if the body
/// is not JSON).
pub fn management(path: &str) -> serde_json::Value {
    let (_, body) = management_request("GET", path, None);
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// A request to RabbitMQ's management API: the status line and the body.
pub fn management_request(
    method: &str,
    path: &str,
    json: Option<&serde_json::Value>,
) -> (String, String) {
    kit::broker::management_request(method, path, json).unwrap_or_else(|e| panic!("{e}"))
}

/// The broker's version, as its management API reports it (e.g. "3.10.8", "4.0.5").
pub fn broker_version() -> String {
    management("/api/overview")["rabbitmq_version"]
        .as_str()
        .expect("the management API reports the version")
        .to_string()
}

/// A header of a dead letter, as text.
pub fn header(m: &lapin::message::BasicGetMessage, name: &str) -> Option<String> {
    let h = m.delivery.properties.headers().as_ref()?;
    h.inner().get(name).map(|v| match v {
        lapin::types::AMQPValue::LongString(s) => {
            String::from_utf8_lossy(s.as_bytes()).into_owned()
        }
        other => format!("{other:?}"),
    })
}
