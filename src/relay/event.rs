//! One event of an outbox row, as the relay publishes it: its AMQP properties, and why the broker
//! refused it, if it did.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation};
use serde::Deserialize;
use serde_json::value::RawValue;

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

/// One element of an outbox row's array as PostgreSQL writes it (`outbox_event`, V7; V13). `headers`
/// and `body` stay the text PostgreSQL wrote: the body is published as it is.
#[derive(Deserialize)]
struct Stored<'a> {
    event_id: Option<String>,
    routing_key: Option<String>,
    reply_to: Option<String>,
    correlation_id: Option<String>,
    #[serde(borrow)]
    headers: Option<&'a RawValue>,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
}

impl Event {
    /// The events of one outbox row, in order, from the text of its array.
    pub(super) fn all_of(row: &str) -> Result<Vec<Event>, serde_json::Error> {
        let elements: Vec<&RawValue> = serde_json::from_str(row)?;
        elements
            .into_iter()
            .map(|element| {
                let e: Stored = serde_json::from_str(element.get())?;
                Ok(Event {
                    raw: element.get().to_string(),
                    event_id: e.event_id.unwrap_or_default(),
                    routing_key: e.routing_key.unwrap_or_default(),
                    reply_to: e.reply_to,
                    correlation_id: e.correlation_id,
                    headers: e.headers.map(|h| h.get().to_string()),
                    body: e.body.map(|b| b.get().to_string()).unwrap_or_default(),
                })
            })
            .collect()
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

    #[test]
    fn a_row_is_split_into_its_events_in_order_each_body_as_postgresql_wrote_it() {
        // As `events::text` prints an outbox row: the second event a callback with no headers.
        let row = r#"[{"body": {"type": "record.accepted", "event_id": "e-1", "findings": []}, "headers": {"traceparent": "00-ab-cd-01"}, "reply_to": null, "event_id": "e-1", "routing_key": "record.accepted", "correlation_id": null}, {"body": {"type": "outcome", "outcome": "accepted"}, "headers": null, "reply_to": "edc.reply.s1", "event_id": "e-2", "routing_key": "edc.reply.s1", "correlation_id": "c-9"}]"#;
        let events = Event::all_of(row).unwrap();
        assert_eq!(events.len(), 2);
        let (a, b) = (&events[0], &events[1]);
        assert_eq!((a.event_id.as_str(), a.kind()), ("e-1", "record.accepted"));
        assert_eq!(
            a.body,
            r#"{"type": "record.accepted", "event_id": "e-1", "findings": []}"#
        );
        assert_eq!(
            a.headers.as_deref(),
            Some(r#"{"traceparent": "00-ab-cd-01"}"#)
        );
        assert!(a.raw.starts_with(r#"{"body": {"type": "record.accepted""#));
        assert!(a.raw.ends_with(r#""correlation_id": null}"#));
        assert_eq!(
            (a.reply_to.as_deref(), a.correlation_id.as_deref()),
            (None, None)
        );
        assert_eq!(b.kind(), "callback");
        assert_eq!(b.reply_to.as_deref(), Some("edc.reply.s1"));
        assert_eq!(b.correlation_id.as_deref(), Some("c-9"));
        assert_eq!(b.headers, None);
        assert_eq!(b.body, r#"{"type": "outcome", "outcome": "accepted"}"#);
        // A row before V7 (one event, no headers key) and a row that is not an array.
        let old = Event::all_of(r#"[{"body": {"x": 1}, "event_id": "e-3", "routing_key": "record.queried", "reply_to": null, "correlation_id": null}]"#).unwrap();
        assert_eq!(
            (old[0].headers.as_deref(), old[0].body.as_str()),
            (None, r#"{"x": 1}"#)
        );
        assert!(Event::all_of(r#"{"body": {}}"#).is_err());
    }
}
