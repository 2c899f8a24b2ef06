//! `edc-ingest dlq ...`: inspect, replay and purge dead letters, safely.
//!
//! Dead letters keep the original body, which holds patient identifiers, so nothing here prints a
//! body: `show` prints a de-identified preview (identifier values, `phi` items and anything the
//! protocol does not define are withheld). Messages are taken with `basic.get`; unless the command
//! removes them, they are put back as a copy (see [`Session::close`]), never returned to the queue.
//! `replay` republishes to the work queue with publisher confirms and only then removes the dead
//! letter; `purge` asks first, holding nothing while it asks. Both record who did what, when and
//! with what result in `dlq_actions`.
//!
//! `show` and `replay` print each dead letter as they handle it; whatever happens next, what was
//! printed stays printed, and the letters not removed are put back all the same. Message ids, header
//! values, routing keys, reply addresses and the fields of a body are printed through
//! [`printable`](crate::printable::printable): escaped and bounded, in the text and in the JSON.

use std::collections::BTreeMap;
use std::io::Write;

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
use crate::printable::printable;
use crate::protocol::Registry;
use crate::store;

use super::progress::Progress;
use super::{Format, emit};

/// The reasons the broker itself gives when it dead-letters a message (its `x-death` header): past
/// the work queue's delivery limit, expired there (an uploader's `expiration`, or a TTL policy),
/// rejected without requeue by a consumer, or dropped from the head of a queue over its length limit.
pub const BROKER_REASONS: [&str; 4] = ["delivery_limit", "expired", "rejected", "maxlen"];

/// Every kind `--kind` accepts, as `dlq list` shows them: edc-ingest's own kinds
/// ([`RejectKind::ALL`](crate::pipeline::RejectKind::ALL), the `x-edc-error-kind` header), `broker:<reason>` for what the broker
/// dead-lettered itself, and `unknown` for a dead letter with neither (one published to the queue by
/// hand).
pub const KINDS: [&str; 12] = [
    "malformed",
    "too_large",
    "invalid",
    "conflict",
    "panic",
    "failed",
    "poison",
    "broker:delivery_limit",
    "broker:expired",
    "broker:rejected",
    "broker:maxlen",
    "unknown",
];

/// The kind of a dead letter no header explains.
const UNKNOWN: &str = "unknown";

/// On a copy put back: the routing key of the dead letter as it was first taken (the work queue it
/// came from), which the copy, published to the dead-letter queue by name, would otherwise lose.
pub const H_QUEUE: &str = "x-edc-queue";

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

    /// The work queue the message came from: the routing key it was dead-lettered with, kept in
    /// [`H_QUEUE`] on the copies put back (which are published to the dead-letter queue itself).
    fn queue(&self) -> String {
        self.header(H_QUEUE)
            .unwrap_or_else(|| self.message.delivery.routing_key.to_string())
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
    /// Connects, with nothing taken yet.
    async fn connect(settings: &Settings) -> anyhow::Result<Session> {
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
    async fn open(settings: &Settings, limit: usize) -> anyhow::Result<Session> {
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
    async fn take(&mut self, settings: &Settings) -> anyhow::Result<Option<&Letter>> {
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
    async fn fail(self, settings: &Settings, error: anyhow::Error) -> anyhow::Error {
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

/// What `dlq list` counted.
#[derive(Default)]
struct Counts {
    total: usize,
    by_kind: BTreeMap<(String, String), usize>,
    by_study: BTreeMap<Option<String>, usize>,
    by_site: BTreeMap<Option<String>, usize>,
    by_batch: BTreeMap<Option<String>, usize>,
}

/// Counts by kind and reason, and by study, site and batch where the body says: text, or one JSON
/// document (see the README for its fields).
pub async fn list(
    settings: &Settings,
    filter: &Filter,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let session = Session::open(settings, filter.limit).await?;
    let mut c = Counts::default();
    for l in session.letters.iter().filter(|l| l.matches(filter)) {
        c.total += 1;
        let shown = |v: Option<String>| v.map(|v| printable(&v));
        *c.by_kind
            .entry((printable(&l.kind), printable(&l.reason)))
            .or_default() += 1;
        *c.by_study.entry(shown(l.field("study"))).or_default() += 1;
        *c.by_site.entry(shown(l.field("site"))).or_default() += 1;
        *c.by_batch.entry(shown(l.batch_id())).or_default() += 1;
    }
    let looked = session.letters.len();
    session.close(settings).await?;
    let queue = &settings.amqp.dead_letter_queue;
    if format == Format::Json {
        let counted = |map: &BTreeMap<Option<String>, usize>, key: &str| {
            map.iter()
                .map(|(k, n)| json!({key: k, "count": n}))
                .collect::<Vec<_>>()
        };
        let doc = json!({
            "queue": queue,
            "looked_at": looked,
            "limit": filter.limit,
            "matching": c.total,
            "by_kind_and_reason": c.by_kind.iter()
                .map(|((kind, reason), n)| json!({"kind": kind, "reason": reason, "count": n}))
                .collect::<Vec<_>>(),
            "by_study": counted(&c.by_study, "study"),
            "by_site": counted(&c.by_site, "site"),
            "by_batch": counted(&c.by_batch, "batch_id"),
        });
        return Ok(emit(out, &doc.to_string())?);
    }
    let mut text = format!(
        "{} dead letters in {queue} (looked at {looked}, limit {})\n",
        c.total, filter.limit
    );
    text.push_str("by kind and reason:\n");
    for ((kind, reason), n) in &c.by_kind {
        text.push_str(&format!("  {n:>6}  {kind}: {reason}\n"));
    }
    for (title, map, none) in [
        ("by study", &c.by_study, "(unknown)"),
        ("by site", &c.by_site, "(unknown)"),
        ("by batch", &c.by_batch, "(none)"),
    ] {
        text.push_str(&format!("{title}:\n"));
        for (k, n) in map {
            text.push_str(&format!("  {n:>6}  {}\n", k.as_deref().unwrap_or(none)));
        }
    }
    out.write_all(text.as_bytes())?;
    Ok(out.flush()?)
}

/// One dead letter as `show` prints it: every value an uploader could have chosen is escaped.
fn shown(l: &Letter, registry: &Registry) -> Value {
    let d = &l.message.delivery;
    let p = &d.properties;
    let text = |v: Option<String>| v.map(|v| printable(&v));
    json!({
        "message_id": p.message_id().as_ref().map(|m| printable(m.as_str())),
        "kind": printable(&l.kind),
        "reason": printable(&l.reason),
        "attempts": l.header(H_ATTEMPTS).and_then(|a| a.parse::<i64>().ok()),
        "failed_at": text(l.header(H_FAILED_AT)),
        "consumer": text(l.header(H_CONSUMER)),
        "expires_at": text(l.header(H_EXPIRES_AT)),
        "reply_to": p.reply_to().as_ref().map(|r| printable(r.as_str())),
        "queue": printable(&l.queue()),
        "body_bytes": d.data.len(),
        "preview": l.body.as_ref().map(|b| preview_value(b, registry)),
    })
}

/// `show`'s text for one dead letter (from [`shown`]).
fn shown_text(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let mut out = format!(
        "--- message_id {}\nkind: {}\nreason: {}\n",
        s("message_id").unwrap_or_else(|| "-".into()),
        s("kind").unwrap_or_default(),
        s("reason").unwrap_or_default()
    );
    if let Some(n) = v["attempts"].as_i64() {
        out.push_str(&format!("{H_ATTEMPTS}: {n}\n"));
    }
    for (h, k) in [
        (H_FAILED_AT, "failed_at"),
        (H_CONSUMER, "consumer"),
        (H_EXPIRES_AT, "expires_at"),
    ] {
        if let Some(v) = s(k) {
            out.push_str(&format!("{h}: {v}\n"));
        }
    }
    if let Some(r) = s("reply_to") {
        out.push_str(&format!("reply_to: {r}\n"));
    }
    out.push_str(&format!("queue: {}\n", s("queue").unwrap_or_default()));
    let preview = match &v["preview"] {
        Value::Null => "(not a JSON object; not shown, it may hold anything)".to_string(),
        p => p.to_string(),
    };
    out.push_str(&format!("body ({} bytes): {preview}", v["body_bytes"]));
    out
}

/// The first `count` matching dead letters, each printed as soon as it is taken: headers and a
/// de-identified preview of the body, as text or as one JSON object per line. The whole queue (up
/// to the limit) is still read, so that the copies put back keep its order.
pub async fn show(
    settings: &Settings,
    filter: &Filter,
    count: usize,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let registry = Registry::load(&settings.studies_dir)
        .map_err(|e| anyhow::anyhow!("study protocols are invalid:\n{e}"))?;
    let mut session = Session::connect(settings).await?;
    let mut printed = 0;
    let mut result: anyhow::Result<()> = Ok(());
    while session.letters.len() < filter.limit {
        let letter = match session.take(settings).await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        if printed == count || !letter.matches(filter) {
            continue;
        }
        let v = shown(letter, &registry);
        let line = match format {
            Format::Json => v.to_string(),
            Format::Text => shown_text(&v),
        };
        if let Err(e) = emit(out, &line) {
            result = Err(e.into());
            break;
        }
        printed += 1;
    }
    if let Err(e) = result {
        return Err(session.fail(settings, e).await);
    }
    session.close(settings).await?;
    if printed == 0 && format == Format::Text {
        emit(out, "no dead letters match")?;
    }
    Ok(())
}

/// The body with nothing identifying in it: envelope fields, identifier names (values withheld),
/// items the protocol defines as not `phi`; everything else withheld. Every text in it, keys
/// included, is escaped and bounded ([`printable`]). Null for a body that is not a JSON object.
pub fn preview_value(body: &Value, registry: &Registry) -> Value {
    const WITHHELD: &str = "[withheld]";
    let Value::Object(m) = body else {
        return Value::Null;
    };
    let safe_scalar = |v: &Value| match v {
        Value::String(s) => Value::String(printable(s)),
        other => other.clone(),
    };
    let mut out = Map::new();
    // The envelope: everything but the identifiers and the items, which are handled below.
    let envelope = crate::pipeline::parse::ENVELOPE_FIELDS
        .into_iter()
        .filter(|k| *k != "identifiers" && *k != "items");
    for key in envelope {
        if let Some(v) = m.get(key) {
            let safe = match v {
                Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => {
                    safe_scalar(v)
                }
                Value::Object(b) if key == "batch" => {
                    json!({"id": b.get("id").map(safe_scalar), "size": b.get("size").map(safe_scalar)})
                }
                _ => json!(WITHHELD),
            };
            out.insert(key.to_string(), safe);
        }
    }
    if let Some(Value::Object(ids)) = m.get("identifiers") {
        out.insert(
            "identifiers".into(),
            Value::Object(
                ids.keys()
                    .map(|k| (printable(k), json!(WITHHELD)))
                    .collect(),
            ),
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
                let value = if visible {
                    safe_scalar(v)
                } else {
                    json!(WITHHELD)
                };
                (printable(k), value)
            })
            .collect();
        out.insert("items".into(), Value::Object(shown));
    }
    let others = m.keys().filter(|k| !out.contains_key(*k)).count();
    if others > 0 {
        out.insert("(other fields)".into(), json!(format!("{others} withheld")));
    }
    Value::Object(out)
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
/// removes them. Each letter's line is printed once it is handled; on a failure the lines printed
/// stay, and the letters not yet replayed are put back.
pub async fn replay(
    settings: &Settings,
    filter: &Filter,
    dry_run: bool,
    actor: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let registry = Registry::load(&settings.studies_dir)
        .map_err(|e| anyhow::anyhow!("study protocols are invalid:\n{e}"))?;
    let db = connect_db(settings).await?;
    let session = Session::open(settings, filter.limit).await?;
    let selected: Vec<&Letter> = session
        .letters
        .iter()
        .filter(|l| l.matches(filter))
        .collect();
    let progress = Progress::bar(
        selected.len() as u64,
        if dry_run { "checked" } else { "replayed" },
    );
    let mut replayed = 0;
    let mut result = Ok(());
    for l in &selected {
        let step = replay_one(
            settings, &registry, &db, &session, l, dry_run, actor, &progress, out,
        )
        .await;
        match step {
            Ok(done) => replayed += usize::from(done),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        progress.inc(1);
    }
    progress.finish();
    let selected = selected.len();
    if let Err(e) = result {
        return Err(session.fail(settings, e).await);
    }
    session.close(settings).await?;
    let last = if dry_run {
        format!("dry run: {selected} dead letters would be replayed; nothing was changed")
    } else {
        format!(
            "replayed {replayed} of {selected} dead letters (recorded in dlq_actions as {actor})"
        )
    };
    Ok(emit(out, &last)?)
}

/// One letter of [`replay`]: its verdict printed, then (unless `dry_run`) republished, recorded and
/// removed. True once it is replayed.
#[allow(clippy::too_many_arguments)]
async fn replay_one(
    settings: &Settings,
    registry: &Registry,
    db: &tokio_postgres::Client,
    session: &Session,
    l: &Letter,
    dry_run: bool,
    actor: &str,
    progress: &Progress,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    // Only the verdict is wanted here, never the pseudonyms: a throwaway key is enough.
    let key = Pseudonymizer::insecure_dev();
    let d = &l.message.delivery;
    let verdict = match pipeline::prepare(&d.data, settings.max_message_bytes, registry, &key) {
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
        .map_or("-".to_string(), |m| printable(m.as_str()));
    let line = format!("{id} [{}] {verdict}", printable(&l.kind));
    progress.suspend(|| emit(out, &line))?;
    if dry_run {
        return Ok(false);
    }
    let from = l.queue();
    let queue = [&settings.amqp.queue, &settings.amqp.urgent_queue]
        .into_iter()
        .find(|q| from == q.as_str())
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
            H_QUEUE,
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
        db,
        "replay",
        actor,
        l,
        &format!("republished to {queue}; {verdict}"),
    )
    .await?;
    d.acker.ack(BasicAckOptions::default()).await?;
    Ok(true)
}

/// Removes the dead letters of one kind, after confirmation, recording each.
pub async fn purge(
    settings: &Settings,
    filter: &Filter,
    yes: bool,
    actor: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
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
            return Ok(emit(out, "no dead letters match; nothing purged")?);
        }
        eprint!(
            "purge {n} dead letters of kind {} from {}? They cannot be replayed afterwards. Type yes: ",
            filter.kind.as_deref().unwrap_or("any"),
            settings.amqp.dead_letter_queue
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            return Ok(emit(out, "not confirmed; nothing purged")?);
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
        return Ok(emit(out, "no dead letters match; nothing purged")?);
    }
    let mut result = Ok(());
    for l in &chosen {
        let removed = async {
            record_action(&db, "purge", actor, l, "removed").await?;
            l.message
                .delivery
                .acker
                .ack(BasicAckOptions::default())
                .await?;
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = removed.await {
            result = Err(e);
            break;
        }
    }
    let n = chosen.len();
    if let Err(e) = result {
        return Err(session.fail(settings, e).await);
    }
    session.close(settings).await?;
    Ok(emit(
        out,
        &format!("purged {n} dead letters (recorded in dlq_actions as {actor})"),
    )?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::RejectKind;

    #[test]
    fn every_kind_dlq_list_can_show_is_accepted() {
        let ours: Vec<&str> = RejectKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(&KINDS[..ours.len()], ours.as_slice());
        for reason in BROKER_REASONS {
            assert!(
                KINDS.contains(&format!("broker:{reason}").as_str()),
                "{reason}"
            );
        }
        assert_eq!(KINDS.last(), Some(&UNKNOWN));
        assert_eq!(
            KINDS.len(),
            RejectKind::ALL.len() + BROKER_REASONS.len() + 1
        );
    }

    #[test]
    fn the_preview_escapes_what_it_shows_and_withholds_the_rest() {
        let registry = Registry::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/studies"
        )))
        .unwrap();
        let body = json!({"study": "DEMO-001", "form": "VS", "site": "SITE\u{1b}[2J\u{202e}",
            "identifiers": {"full_name": "Ada Lovelace", "x\ny": "1"},
            "items": {"SYSBP": 128, "BOGUS\u{7}": "bell"}, "extra": "Ada"});
        let shown = preview_value(&body, &registry).to_string();
        assert!(
            shown.contains(r#""site":"SITE\\u{1b}[2J\\u{202e}""#),
            "{shown}"
        );
        assert!(shown.contains(r#""x\\u{a}y":"[withheld]""#), "{shown}");
        assert!(shown.contains(r#""BOGUS\\u{7}":"[withheld]""#), "{shown}");
        assert!(shown.contains(r#""SYSBP":128"#), "{shown}");
        assert!(
            !shown.contains("Ada") && !shown.contains('\u{1b}'),
            "{shown}"
        );
        assert_eq!(preview_value(&json!([1, 2]), &registry), Value::Null);
    }
}
