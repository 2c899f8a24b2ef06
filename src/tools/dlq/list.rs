//! `dlq list`: the dead letters counted by kind and reason, and by study, site and batch where the
//! body says, as text or as one JSON document. Every value shown is escaped.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::json;

use crate::config::Settings;
use crate::printable::printable;
use crate::tools::{Format, emit};

use super::take::Session;
use super::{Filter, connect_db};

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
    let db = connect_db(settings).await?;
    let session = Session::open(settings, &db, filter.limit).await?;
    db.close().await;
    let mut c = Counts::default();
    for l in session.letters.iter().filter(|l| l.matches(filter)) {
        c.total += 1;
        let shown = |v: Option<String>| v.map(|v| printable(&v));
        *c.by_kind
            .entry((printable(&l.kind()), printable(&l.reason())))
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
