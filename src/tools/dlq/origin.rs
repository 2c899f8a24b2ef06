//! Who made a dead letter, from the evidence rather than its headers. A dead letter the broker
//! makes itself (past a work queue's delivery limit, say) keeps every header its uploader set, so an
//! `x-edc-*` header proves nothing: an uploader can write `x-edc-error-kind: conflict` on its own
//! message. What proves a dead letter is edc-ingest's own is its `rejections` row, committed before
//! the dead letter is published, one per body hash, message id and upload batch (the
//! `rejections_once_per_batch` index; an ODM file imported twice has a row in each batch, and
//! either proves the letter ours): then its kind, reason, attempts, consumer and time come from that row. Without a row, a dead
//! letter is the broker's (its latest `x-death` reason: the broker puts the entry of the death it
//! just caused first) or unknown, and its `x-edc-*` headers are someone else's.
//!
//! The rows of the letters a command takes are read in one query per batch ([`look_up`]), never
//! one per letter. None of this needs the pseudonymisation key.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::AMQPValue;
use tokio_postgres::error::SqlState;

use super::UNKNOWN;

/// A `rejections` row: what edc-ingest recorded when it dead-lettered the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Rejection {
    pub(super) kind: String,
    pub(super) reason: String,
    pub(super) attempts: i32,
    pub(super) consumer: Option<String>,
    pub(super) rejected_at: DateTime<Utc>,
}

/// Who made a dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// edc-ingest: its `rejections` row.
    Ours(Rejection),
    /// The broker, for this reason (`x-death`): past the delivery limit, expired, ...
    Broker(String),
    /// Neither: put into the dead-letter queue by some other means.
    Unknown,
    /// Not known: the look-up failed. Such a letter is never selected, and is put back as taken.
    Unverified,
}

/// The reason shown for a dead letter the broker made.
pub(super) const BY_THE_BROKER: &str = "dead-lettered by the broker";
/// The reason shown for a dead letter nobody we know of made.
pub(super) const BY_NEITHER: &str = "no rejection recorded and no x-death: not dead-lettered by \
                                     edc-ingest or the broker";

impl Origin {
    /// From the letter's row, if it has one, else from its properties (`x-death`).
    pub(super) fn of(row: Option<Rejection>, props: &BasicProperties) -> Origin {
        match row {
            Some(r) => Origin::Ours(r),
            None => death_reason(props).map_or(Origin::Unknown, Origin::Broker),
        }
    }

    /// As `dlq list` shows it and `--kind` selects it.
    pub(super) fn kind(&self) -> String {
        match self {
            Origin::Ours(r) => r.kind.clone(),
            Origin::Broker(reason) => format!("broker:{reason}"),
            Origin::Unknown => UNKNOWN.into(),
            Origin::Unverified => "unverified".into(),
        }
    }

    pub(super) fn reason(&self) -> String {
        match self {
            Origin::Ours(r) => r.reason.clone(),
            Origin::Broker(_) => BY_THE_BROKER.into(),
            Origin::Unknown => BY_NEITHER.into(),
            Origin::Unverified => "not looked up".into(),
        }
    }

    pub(super) fn row(&self) -> Option<&Rejection> {
        match self {
            Origin::Ours(r) => Some(r),
            _ => None,
        }
    }
}

/// The key of a letter's rows: its body's SHA-256 (hex) and its message id, `""` for none (the
/// leading columns of the `rejections_once_per_batch` index).
pub(super) type Key = (String, String);

/// Letters looked up in one query, at most: bounds the query's size whatever `--limit` is.
pub(super) const LOOKUP_BATCH: usize = 500;

/// The `rejections` rows of these keys, in one query (the `rejections_once_per_batch` index answers it).
pub(super) async fn look_up(
    db: &tokio_postgres::Client,
    keys: &[Key],
) -> anyhow::Result<HashMap<Key, Rejection>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let (hashes, ids): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(h, i)| (h.as_str(), i.as_str())).unzip();
    let rows = db
        .query(
            "SELECT r.body_sha256, coalesce(r.message_id, ''), r.kind, r.reason, r.attempts,
                    r.consumer, r.rejected_at
             FROM unnest($1::text[], $2::text[]) AS k(body_sha256, message_id)
             JOIN rejections r ON r.body_sha256 = k.body_sha256
                              AND coalesce(r.message_id, '') = k.message_id",
            &[&hashes, &ids],
        )
        .await
        .map_err(|e| {
            let said = e
                .as_db_error()
                .map_or(e.to_string(), |d| d.message().to_string());
            if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                anyhow::anyhow!(
                    "{said}: the dlq commands read the rejections table to tell edc-ingest's own \
                     dead letters from the rest; grant SELECT on rejections to the role they log \
                     in as (postgres.url)"
                )
            } else {
                anyhow::anyhow!("looking up the dead letters' rejections rows failed: {said}")
            }
        })?;
    Ok(rows
        .iter()
        .map(|r| {
            let key = (r.get(0), r.get(1));
            let row = Rejection {
                kind: r.get(2),
                reason: r.get(3),
                attempts: r.get(4),
                consumer: r.get(5),
                rejected_at: r.get(6),
            };
            (key, row)
        })
        .collect())
}

/// A header's value as text (a value of another type as the broker library shows it).
pub(super) fn header(props: &BasicProperties, name: &str) -> Option<String> {
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

/// The broker's reason for its latest dead-lettering of the message: the first `x-death` entry
/// (the broker puts the entry of the death it causes first, whatever an uploader wrote there).
fn death_reason(props: &BasicProperties) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = props.headers().as_ref()?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    as_text(first.inner().get("reason")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, FieldTable};

    fn with(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in headers {
            t.insert((*k).into(), v.clone());
        }
        BasicProperties::default().with_headers(t)
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    fn death(reason: &str) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert("reason".into(), text(reason));
        t.insert("queue".into(), text("edc.records"));
        AMQPValue::FieldTable(t)
    }

    fn row() -> Rejection {
        Rejection {
            kind: "invalid".into(),
            reason: "site is not one of study DEMO-001's sites".into(),
            attempts: 1,
            consumer: Some("host:1".into()),
            rejected_at: Utc::now(),
        }
    }

    #[test]
    fn forged_headers_never_make_a_dead_letter_ours_nor_label_it() {
        let forged = with(&[
            ("x-edc-error-kind", text("conflict")),
            ("x-edc-error", text("forged")),
            (
                "x-death",
                AMQPValue::FieldArray(FieldArray::from(vec![
                    death("delivery_limit"),
                    death("expired"),
                ])),
            ),
        ]);
        let o = Origin::of(None, &forged);
        assert_eq!(o, Origin::Broker("delivery_limit".into()));
        assert_eq!(o.kind(), "broker:delivery_limit");
        assert_eq!(o.reason(), BY_THE_BROKER);
        assert_eq!(o.row(), None);
        // No row and no x-death: unknown, whatever the headers claim.
        let o = Origin::of(None, &with(&[("x-edc-error-kind", text("invalid"))]));
        assert_eq!(
            (o.kind().as_str(), o.reason()),
            (UNKNOWN, BY_NEITHER.into())
        );
        // An x-death that is not an array of tables says nothing.
        let odd = with(&[("x-death", text("delivery_limit"))]);
        assert_eq!(Origin::of(None, &odd), Origin::Unknown);
    }

    #[test]
    fn a_rejections_row_makes_a_dead_letter_ours_whatever_its_headers_say() {
        let forged = with(&[
            ("x-edc-error-kind", text("conflict")),
            (
                "x-death",
                AMQPValue::FieldArray(FieldArray::from(vec![death("delivery_limit")])),
            ),
        ]);
        let r = row();
        let o = Origin::of(Some(r.clone()), &forged);
        assert_eq!(o.kind(), "invalid");
        assert_eq!(o.reason(), "site is not one of study DEMO-001's sites");
        assert_eq!(o.row(), Some(&r));
        assert_eq!(Origin::Unverified.kind(), "unverified");
    }
}
