//! `edc-ingest dlq ...`: inspect, replay and purge dead letters, safely.
//!
//! Dead letters keep the original body, which holds patient identifiers, so nothing here prints a
//! body: `show` prints a de-identified preview (identifier values, `phi` items and anything the
//! protocol does not define are withheld). Messages are taken with `basic.get`; unless the command
//! removes them, they are put back as a copy (see [`Session::close`]), never returned to the queue.
//! `replay` republishes to the work queue with publisher confirms and only then removes the dead
//! letter; `purge` asks first, holding nothing while it asks. Both record who did what, when and
//! with what result in `dlq_actions`.

use std::collections::BTreeMap;
use std::fmt::Write;

use lapin::Confirmation;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use serde_json::{Map, Value, json};

use crate::broker::publish::{
    H_ATTEMPTS, H_CONSUMER, H_ERROR, H_EXPIRES_AT, H_FAILED_AT, H_KIND, H_RETRIES, H_RETRY_REASON,
};
use crate::broker::{self, publish};
use crate::config::Settings;
use crate::pipeline::{self, Pseudonymizer};
use crate::protocol::Registry;
use crate::store;

/// Which dead letters a command is about.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub kind: Option<String>,
    pub batch: Option<String>,
    pub limit: usize,
}

struct Letter {
    message: lapin::message::BasicGetMessage,
    kind: String,
    reason: String,
    body: Option<Value>,
}

impl Letter {
    fn header(&self, name: &str) -> Option<String> {
        header(&self.message.delivery.properties, name)
    }

    fn field(&self, name: &str) -> Option<String> {
        self.body.as_ref()?.get(name)?.as_str().map(str::to_string)
    }

    fn batch_id(&self) -> Option<String> {
        self.body
            .as_ref()?
            .get("batch")?
            .get("id")?
            .as_str()
            .map(str::to_string)
    }

    fn matches(&self, f: &Filter) -> bool {
        f.kind.as_ref().is_none_or(|k| *k == self.kind)
            && f.batch
                .as_ref()
                .is_none_or(|b| Some(b) == self.batch_id().as_ref())
    }
}

fn header(props: &BasicProperties, name: &str) -> Option<String> {
    props
        .headers()
        .as_ref()?
        .inner()
        .get(name)
        .map(|v| match v {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.to_string(),
            AMQPValue::LongLongInt(n) => n.to_string(),
            AMQPValue::LongInt(n) => n.to_string(),
            other => format!("{other:?}"),
        })
}

/// An open look at the dead-letter queue: the messages taken, to be put back or removed, and a
/// channel in confirm mode to publish on.
struct Session {
    connection: Connection,
    channel: Channel,
    publisher: Channel,
    letters: Vec<Letter>,
}

impl Session {
    async fn open(settings: &Settings, limit: usize) -> anyhow::Result<Session> {
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
        let mut letters = Vec::new();
        while letters.len() < limit {
            let got = channel
                .basic_get(
                    ShortString::from(settings.amqp.dead_letter_queue.as_str()),
                    BasicGetOptions { no_ack: false },
                )
                .await?;
            let Some(message) = got else { break };
            let props = &message.delivery.properties;
            let kind = header(props, H_KIND)
                .or_else(|| death_reason(props).map(|r| format!("broker:{r}")))
                .unwrap_or_else(|| "unknown".into());
            let reason =
                header(props, H_ERROR).unwrap_or_else(|| "dead-lettered by the broker".into());
            let body = serde_json::from_slice::<Value>(&message.delivery.data)
                .ok()
                .filter(Value::is_object);
            letters.push(Letter {
                message,
                kind,
                reason,
                body,
            });
        }
        Ok(Session {
            connection,
            channel,
            publisher,
            letters,
        })
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
    async fn close(self, settings: &Settings) -> anyhow::Result<()> {
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
                .basic_publish("".into(), queue.into(), options, &d.data, as_taken(d))
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
fn as_taken(d: &lapin::message::Delivery) -> BasicProperties {
    let mut props = d.properties.clone();
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
fn identity(l: &Letter) -> String {
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
    match first.inner().get("reason")? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Counts by kind and reason, and by study, site and batch where the body says.
pub async fn list(settings: &Settings, filter: &Filter) -> anyhow::Result<String> {
    let session = Session::open(settings, filter.limit).await?;
    let mut by: [BTreeMap<String, usize>; 4] = Default::default();
    let mut total = 0;
    for l in session.letters.iter().filter(|l| l.matches(filter)) {
        total += 1;
        *by[0]
            .entry(format!("{}: {}", l.kind, l.reason))
            .or_default() += 1;
        *by[1]
            .entry(l.field("study").unwrap_or_else(|| "(unknown)".into()))
            .or_default() += 1;
        *by[2]
            .entry(l.field("site").unwrap_or_else(|| "(unknown)".into()))
            .or_default() += 1;
        *by[3]
            .entry(l.batch_id().unwrap_or_else(|| "(none)".into()))
            .or_default() += 1;
    }
    let looked = session.letters.len();
    session.close(settings).await?;
    let mut out = String::new();
    writeln!(
        out,
        "{total} dead letters in {} (looked at {looked}, limit {})",
        settings.amqp.dead_letter_queue, filter.limit
    )?;
    for (title, map) in ["by kind and reason", "by study", "by site", "by batch"]
        .iter()
        .zip(&by)
    {
        writeln!(out, "{title}:")?;
        for (k, n) in map {
            writeln!(out, "  {n:>6}  {k}")?;
        }
    }
    Ok(out)
}

/// A few dead letters with their headers and a de-identified preview of the body.
pub async fn show(settings: &Settings, filter: &Filter, count: usize) -> anyhow::Result<String> {
    let registry = Registry::load(&settings.studies_dir)
        .map_err(|e| anyhow::anyhow!("study protocols are invalid:\n{e}"))?;
    let session = Session::open(settings, filter.limit).await?;
    let mut out = String::new();
    for l in session
        .letters
        .iter()
        .filter(|l| l.matches(filter))
        .take(count)
    {
        let p = &l.message.delivery.properties;
        writeln!(
            out,
            "--- message_id {}",
            p.message_id().as_ref().map_or("-", |m| m.as_str())
        )?;
        writeln!(out, "kind: {}", l.kind)?;
        writeln!(out, "reason: {}", l.reason)?;
        for h in [H_ATTEMPTS, H_FAILED_AT, H_CONSUMER] {
            if let Some(v) = l.header(h) {
                writeln!(out, "{h}: {v}")?;
            }
        }
        writeln!(out, "queue: {}", l.message.delivery.routing_key)?;
        writeln!(
            out,
            "body ({} bytes): {}",
            l.message.delivery.data.len(),
            preview(l.body.as_ref(), &registry)
        )?;
    }
    session.close(settings).await?;
    if out.is_empty() {
        out.push_str("no dead letters match\n");
    }
    Ok(out)
}

/// The body with nothing identifying in it: envelope fields, identifier names (values withheld),
/// items the protocol defines as not `phi`; everything else withheld.
pub fn preview(body: Option<&Value>, registry: &Registry) -> String {
    const WITHHELD: &str = "[withheld]";
    let Some(Value::Object(m)) = body else {
        return "(not a JSON object; not shown, it may hold anything)".into();
    };
    let mut out = Map::new();
    // The envelope: everything but the identifiers and the items, which are handled below.
    let envelope = crate::pipeline::parse::ENVELOPE_FIELDS
        .into_iter()
        .filter(|k| *k != "identifiers" && *k != "items");
    for key in envelope {
        if let Some(v) = m.get(key) {
            let safe = match v {
                Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => v.clone(),
                Value::Object(b) if key == "batch" => {
                    json!({"id": b.get("id"), "size": b.get("size")})
                }
                _ => json!(WITHHELD),
            };
            out.insert(key.to_string(), safe);
        }
    }
    if let Some(Value::Object(ids)) = m.get("identifiers") {
        out.insert(
            "identifiers".into(),
            Value::Object(ids.keys().map(|k| (k.clone(), json!(WITHHELD))).collect()),
        );
    }
    let form = (|| {
        let study = m.get("study")?.as_str()?;
        let versions = registry.studies().filter(|p| p.study == study);
        let name = m.get("form")?.as_str()?;
        versions
            .into_iter()
            .find_map(|p| p.forms.get(name).map(|f| f.items.clone()))
    })();
    if let Some(Value::Object(items)) = m.get("items") {
        let shown = items
            .iter()
            .map(|(k, v)| {
                let visible = form.as_ref().and_then(|f| f.get(k)).is_some_and(|d| !d.phi)
                    && !v.is_object()
                    && !v.is_array();
                (k.clone(), if visible { v.clone() } else { json!(WITHHELD) })
            })
            .collect();
        out.insert("items".into(), Value::Object(shown));
    }
    let others = m.keys().filter(|k| !out.contains_key(*k)).count();
    if others > 0 {
        out.insert("(other fields)".into(), json!(format!("{others} withheld")));
    }
    Value::Object(out).to_string()
}

/// Who is acting: `--actor`, else the login name.
pub fn actor(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Re-validates the selected dead letters against the current protocols and looks each valid one
/// up in the database (already stored: a duplicate, or a conflict if the stored payload differs);
/// without `dry_run`, republishes them to their work queue (confirmed), records the replay, then
/// removes them.
pub async fn replay(
    settings: &Settings,
    filter: &Filter,
    dry_run: bool,
    actor: &str,
) -> anyhow::Result<String> {
    let registry = Registry::load(&settings.studies_dir)
        .map_err(|e| anyhow::anyhow!("study protocols are invalid:\n{e}"))?;
    // Only the verdict is wanted here, never the pseudonyms: a throwaway key is enough.
    let key = Pseudonymizer::insecure_dev();
    let db = connect_db(settings).await?;
    let session = Session::open(settings, filter.limit).await?;
    let mut out = String::new();
    let (mut replayed, mut selected) = (0, 0);
    for l in session.letters.iter().filter(|l| l.matches(filter)) {
        selected += 1;
        let d = &l.message.delivery;
        let verdict = match pipeline::prepare(&d.data, settings.max_message_bytes, &registry, &key)
        {
            Ok(r) => {
                let stored: Option<String> = db
                    .query_opt(
                        "SELECT payload_sha256 FROM crf_records WHERE record_id = $1 AND version = $2",
                        &[&r.record_id, &r.version],
                    )
                    .await?
                    .map(|row| row.get(0));
                let what = format!("record {} version {}", r.record_id, r.version);
                match stored {
                    None => format!("would be stored as {} ({what})", r.status.as_str()),
                    Some(h) if h == pipeline::sha256_hex(&d.data) => {
                        format!("would be a duplicate: {what} is already stored with this payload")
                    }
                    Some(_) => format!(
                        "would be dead-lettered as conflict: {what} is already stored with another payload"
                    ),
                }
            }
            Err(r) => format!("would be dead-lettered again as {}: {}", r.kind, r.reason),
        };
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map_or("-".to_string(), |m| m.to_string());
        writeln!(out, "{id} [{}] {verdict}", l.kind)?;
        if dry_run {
            continue;
        }
        let queue = [&settings.amqp.queue, &settings.amqp.urgent_queue]
            .into_iter()
            .find(|q| d.routing_key.as_str() == q.as_str())
            .unwrap_or(&settings.amqp.queue);
        let mut headers = FieldTable::default();
        for (k, v) in d
            .properties
            .headers()
            .as_ref()
            .map(|h| h.inner().clone())
            .unwrap_or_default()
        {
            let ours = [
                H_KIND,
                H_ERROR,
                H_ATTEMPTS,
                H_FAILED_AT,
                H_CONSUMER,
                H_RETRIES,
                H_RETRY_REASON,
                "x-death",
                "x-first-death-exchange",
                "x-first-death-queue",
                "x-first-death-reason",
                "x-delivery-count",
            ];
            if !ours.contains(&k.as_str()) {
                headers.insert(k, v);
            }
        }
        headers.insert(
            "x-edc-replayed-by".into(),
            AMQPValue::LongString(actor.to_string().into()),
        );
        let props = d.properties.clone().with_headers(headers);
        publish::publish_to(&session.publisher, "", queue, &d.data, props)
            .await
            .map_err(|e| anyhow::anyhow!("replay of {id}: {e}"))?;
        record_action(
            &db,
            "replay",
            actor,
            l,
            &format!("republished to {queue}; {verdict}"),
        )
        .await?;
        d.acker.ack(BasicAckOptions::default()).await?;
        replayed += 1;
    }
    session.close(settings).await?;
    if dry_run {
        writeln!(
            out,
            "dry run: {selected} dead letters would be replayed; nothing was changed"
        )?;
    } else {
        writeln!(
            out,
            "replayed {replayed} of {selected} dead letters (recorded in dlq_actions as {actor})"
        )?;
    }
    Ok(out)
}

/// Removes the dead letters of one kind, after confirmation, recording each.
pub async fn purge(
    settings: &Settings,
    filter: &Filter,
    yes: bool,
    actor: &str,
) -> anyhow::Result<String> {
    let db = connect_db(settings).await?;
    // Asked first, with every letter put back: a prompt left open, or abandoned with Ctrl-C, holds
    // no dead letter (a letter held unacked returns when the tool dies, and that return counts
    // towards the queue's delivery limit). The purge then removes only letters counted here.
    let mut confirmed: Option<BTreeMap<String, usize>> = None;
    if !yes {
        let session = Session::open(settings, filter.limit).await?;
        let mut seen = BTreeMap::new();
        for l in session.letters.iter().filter(|l| l.matches(filter)) {
            *seen.entry(identity(l)).or_insert(0) += 1;
        }
        session.close(settings).await?;
        let n: usize = seen.values().sum();
        if n == 0 {
            return Ok("no dead letters match; nothing purged\n".into());
        }
        eprint!(
            "purge {n} dead letters of kind {} from {}? They cannot be replayed afterwards. Type yes: ",
            filter.kind.as_deref().unwrap_or("any"),
            settings.amqp.dead_letter_queue
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            return Ok("not confirmed; nothing purged\n".into());
        }
        confirmed = Some(seen);
    }
    let session = Session::open(settings, filter.limit).await?;
    let chosen: Vec<&Letter> = session
        .letters
        .iter()
        .filter(|l| l.matches(filter))
        .filter(|l| match confirmed.as_mut() {
            None => true,
            Some(left) => left.get_mut(&identity(l)).is_some_and(|n| {
                let take = *n > 0;
                *n = n.saturating_sub(1);
                take
            }),
        })
        .collect();
    if chosen.is_empty() {
        session.close(settings).await?;
        return Ok("no dead letters match; nothing purged\n".into());
    }
    for l in &chosen {
        record_action(&db, "purge", actor, l, "removed").await?;
        l.message
            .delivery
            .acker
            .ack(BasicAckOptions::default())
            .await?;
    }
    let n = chosen.len();
    session.close(settings).await?;
    Ok(format!(
        "purged {n} dead letters (recorded in dlq_actions as {actor})\n"
    ))
}

async fn connect_db(settings: &Settings) -> anyhow::Result<store::Connected> {
    Ok(store::connect(&settings.postgres.url, &settings.postgres).await?)
}

async fn record_action(
    db: &tokio_postgres::Client,
    action: &str,
    actor: &str,
    l: &Letter,
    result: &str,
) -> anyhow::Result<()> {
    let d = &l.message.delivery;
    let message_id = d.properties.message_id().as_ref().map(|m| m.to_string());
    let record_id = l
        .field("record_id")
        .and_then(|s| uuid::Uuid::parse_str(&s).ok());
    let batch_id = l.batch_id().and_then(|s| uuid::Uuid::parse_str(&s).ok());
    let sha = pipeline::sha256_hex(&d.data);
    db.execute(
        "INSERT INTO dlq_actions (action, actor, message_id, record_id, batch_id, kind, body_sha256, result)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&action, &actor, &message_id, &record_id, &batch_id, &l.kind, &sha, &result],
    )
    .await?;
    Ok(())
}
