//! `dlq purge`: removes the dead letters of one kind for good, recording each in `dlq_actions`. The
//! kind is the one `dlq list` shows, from the evidence (see `origin`): a forged `x-edc-error-kind`
//! can neither bring a dead letter into a purge nor keep it out of one. It asks first (unless
//! `--yes`), holding no dead letter while it waits for the answer, and then removes only the
//! letters it counted.

use std::collections::BTreeMap;
use std::io::Write;

use lapin::options::BasicAckOptions;

use crate::config::Settings;
use crate::tools::emit;

use super::take::{Letter, Session, identity};
use super::{Filter, connect_db, record_action};

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
        let session = Session::open(settings, &db, filter.limit).await?;
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
    let session = Session::open(settings, &db, filter.limit).await?;
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
