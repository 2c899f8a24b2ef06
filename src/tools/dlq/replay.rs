//! `dlq replay`: each selected dead letter re-validated against the current protocols and looked up
//! in the database, its verdict printed at once; unless it is a dry run, republished to the work
//! queue it came from (the urgent one included), recorded in `dlq_actions`, then removed. Needs no
//! pseudonymisation key: only the verdict is wanted, never a pseudonym.
//!
//! A replay publishes only to one of the two configured work queues (`amqp.queue`,
//! `amqp.urgent_queue`): the queue a dead letter came from (its routing key, or `x-edc-queue` on a
//! copy put back) is used when it is one of them, else `amqp.queue`, and the line says so. What is republished
//! carries none of the dead letter's `user_id`, `expiration`, `x-edc-*` or broker headers
//! ([`props::replayed`]).

use std::io::Write;

use lapin::options::BasicAckOptions;

use crate::broker::publish;
use crate::config::{AmqpSettings, Settings};
use crate::pipeline::{self, Pseudonymizer};
use crate::printable::printable;
use crate::protocol::Registry;
use crate::tools::emit;
use crate::tools::progress::Progress;

use super::props;
use super::take::{Letter, Session};
use super::{Filter, connect_db, protocols, record_action};

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
    let registry = protocols(settings)?;
    let db = connect_db(settings).await?;
    let session = Session::open(settings, &db, filter.limit).await?;
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
    let (queue, named) = replay_queue(&settings.amqp, &l.queue(settings));
    let mut line = format!("{id} [{}] {verdict}", printable(&l.kind()));
    if let Some(named) = named {
        line.push_str(&format!(
            " (it came from {}, not a work queue: it goes to {queue})",
            printable(&named)
        ));
    }
    progress.suspend(|| emit(out, &line))?;
    if dry_run {
        return Ok(false);
    }
    let props = props::replayed(&d.properties, actor);
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

/// The work queue a replay goes to: the one the dead letter came from if it is one of the two work
/// queues, else `amqp.queue`, with the name it gave (to say so).
fn replay_queue<'a>(amqp: &'a AmqpSettings, named: &str) -> (&'a str, Option<String>) {
    match [&amqp.queue, &amqp.urgent_queue]
        .into_iter()
        .find(|q| q.as_str() == named)
    {
        Some(q) => (q, None),
        None => (&amqp.queue, Some(named.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_goes_only_to_one_of_the_two_work_queues() {
        let dev = ("EDC__DEV_INSECURE_PSEUDONYM_KEY".into(), "true".into());
        let amqp = Settings::load_with_env(None, [dev]).unwrap().amqp;
        assert_eq!(replay_queue(&amqp, "edc.records"), ("edc.records", None));
        assert_eq!(
            replay_queue(&amqp, "edc.records.urgent"),
            ("edc.records.urgent", None)
        );
        for elsewhere in [
            "edc.events",
            "edc.records.dlq",
            "",
            "edc.records.retry.1000ms",
        ] {
            assert_eq!(
                replay_queue(&amqp, elsewhere),
                ("edc.records", Some(elsewhere.to_string())),
                "{elsewhere}"
            );
        }
    }
}
