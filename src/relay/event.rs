//! One event of an outbox row, as the relay publishes it: its AMQP properties, and why the broker
//! refused it, if it did.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation};

/// One event of an outbox row, as it is published.
pub(super) struct Event {
    /// The whole element, kept for parking.
    pub(super) raw: String,
    pub(super) event_id: String,
    pub(super) routing_key: String,
    pub(super) reply_to: Option<String>,
    pub(super) correlation_id: Option<String>,
    /// AMQP headers to carry (the record's trace context), as a JSON object.
    pub(super) headers: Option<String>,
    pub(super) body: String,
}

impl Event {
    pub(super) fn of(row: &tokio_postgres::Row) -> Event {
        Event {
            raw: row.get(1),
            event_id: row.get::<_, Option<String>>(2).unwrap_or_default(),
            routing_key: row.get::<_, Option<String>>(3).unwrap_or_default(),
            reply_to: row.get(4),
            correlation_id: row.get(5),
            headers: row.get(6),
            body: row.get::<_, Option<String>>(7).unwrap_or_default(),
        }
    }

    /// Its kind, safe to log: `callback`, or the routing key of an event (ours, never an
    /// uploader's value).
    pub(super) fn kind(&self) -> &str {
        if self.reply_to.is_some() {
            "callback"
        } else {
            &self.routing_key
        }
    }

    pub(super) fn properties(&self) -> BasicProperties {
        let mut props = BasicProperties::default()
            .with_message_id(ShortString::from(self.event_id.as_str()))
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(2)
            .with_type(ShortString::from(if self.reply_to.is_some() {
                "outcome"
            } else {
                self.routing_key.as_str()
            }));
        if let Some(c) = &self.correlation_id {
            props = props.with_correlation_id(ShortString::from(c.as_str()));
        }
        let headers = self.headers.as_deref().and_then(|h| {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(h).ok()
        });
        if let Some(headers) = headers {
            let mut table = FieldTable::default();
            for (k, v) in headers {
                if let serde_json::Value::String(v) = v {
                    table.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
                }
            }
            props = props.with_headers(table);
        }
        props
    }
}

/// Why the broker refused an event, if it did: a `nack`, or a callback returned unroutable.
pub(super) fn refused(confirm: Confirmation, event: &Event) -> Option<String> {
    match confirm {
        Confirmation::Ack(None) | Confirmation::NotRequested => None,
        Confirmation::Ack(Some(_)) => Some(format!(
            "unroutable: no queue takes the {} (its reply queue does not exist)",
            event.kind()
        )),
        Confirmation::Nack(_) => Some(format!(
            "the broker refused the {} (nack: a full queue that rejects publishes, say)",
            event.kind()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reply_to: Option<&str>, headers: Option<&str>) -> Event {
        Event {
            raw: "{}".into(),
            event_id: "4b0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d".into(),
            routing_key: "record.accepted".into(),
            reply_to: reply_to.map(str::to_string),
            correlation_id: Some("c-1".into()),
            headers: headers.map(str::to_string),
            body: "{}".into(),
        }
    }

    #[test]
    fn only_a_plain_ack_is_published_anything_else_is_parked_with_our_reason() {
        let e = event(Some("edc.reply.site-03"), None);
        assert_eq!(refused(Confirmation::Ack(None), &e), None);
        let nack = refused(Confirmation::Nack(None), &e).unwrap();
        assert!(nack.contains("refused the callback"), "{nack}");
        assert!(!nack.contains("site-03"), "never the uploader's address");
        let ev = event(None, None);
        assert!(
            refused(Confirmation::Nack(None), &ev)
                .unwrap()
                .contains("record.accepted")
        );
    }

    #[test]
    fn an_event_carries_its_id_type_correlation_and_trace_headers() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = event(None, Some(&format!(r#"{{"traceparent": "{tp}"}}"#))).properties();
        assert_eq!(
            p.message_id().as_ref().unwrap().as_str(),
            "4b0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d"
        );
        assert_eq!(p.kind().as_ref().unwrap().as_str(), "record.accepted");
        assert_eq!(p.delivery_mode(), &Some(2));
        let headers = p.headers().as_ref().unwrap();
        assert!(
            matches!(headers.inner().get("traceparent"), Some(AMQPValue::LongString(s)) if s.to_string() == tp)
        );
        let callback = event(Some("edc.reply.x"), None).properties();
        assert_eq!(callback.kind().as_ref().unwrap().as_str(), "outcome");
        assert_eq!(callback.correlation_id().as_ref().unwrap().as_str(), "c-1");
        assert!(callback.headers().is_none());
    }
}
