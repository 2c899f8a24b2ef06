//! `edc-ingest dlq ...`: inspect, replay and purge dead letters, safely. This file holds what the
//! commands share: the kinds `--kind` accepts, the filter, who is acting, and the record of actions
//! in `dlq_actions`; each command has a file of its own, and `take` holds the dead letters while a
//! command looks at them.
//!
//! Who made a dead letter is read from the evidence, never from its headers ([`origin`]): a dead
//! letter the broker makes keeps its uploader's headers, forged `x-edc-*` ones included. So every
//! command reads the `rejections` table, and needs the database.
//!
//! Dead letters keep the original body, which holds patient identifiers, so nothing here prints a
//! body: `show` prints a de-identified preview ([`preview`]: identifier values, `phi` items and
//! anything the protocol does not define are withheld). Messages are taken with `basic.get`; unless
//! the command removes them, they are put back as a copy (see `take`), never returned to the
//! queue. `replay` republishes to the work queue the dead letter came from (one of the two
//! configured work queues, never another), with publisher confirms, and only then removes the dead
//! letter; `purge` asks first, holding nothing while it asks. Both
//! record who did what, when and with what result in `dlq_actions`.
//!
//! `show` and `replay` print each dead letter as they handle it; whatever happens next, what was
//! printed stays printed, and the letters not removed are put back all the same. Message ids, header
//! values, routing keys, reply addresses and the fields of a body are printed through
//! [`printable`](crate::printable::printable): escaped and bounded, in the text and in the JSON.
//! None of the commands needs the pseudonymisation key.

#[doc(hidden)]
pub mod fuzz;
mod list;
mod origin;
mod props;
mod purge;
mod replay;
mod show;
mod take;

pub use list::list;
pub use purge::purge;
pub use replay::replay;
pub use show::{preview, show};

use crate::config::Settings;
use crate::pipeline;
use crate::protocol::Registry;
use crate::store;

use take::Letter;

/// The reasons the broker itself gives when it dead-letters a message (its `x-death` header): past
/// the work queue's delivery limit, expired there (an uploader's `expiration`, or a TTL policy),
/// rejected without requeue by a consumer, or dropped from the head of a queue over its length limit.
pub const BROKER_REASONS: [&str; 4] = ["delivery_limit", "expired", "rejected", "maxlen"];

/// Every kind `--kind` accepts, as `dlq list` shows them: edc-ingest's own kinds
/// ([`RejectKind::ALL`](crate::pipeline::RejectKind::ALL), from the dead letter's `rejections` row),
/// `broker:<reason>` for what the broker dead-lettered itself, and `unknown` for a dead letter with
/// neither (one published to the queue by hand).
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

/// The kind of a dead letter neither a `rejections` row nor the broker explains.
const UNKNOWN: &str = "unknown";

/// On a copy put back: the routing key of the dead letter as it was first taken (the work queue it
/// came from), which the copy, published to the dead-letter queue by name, would otherwise lose.
/// `replay` reads it only to choose between the two work queues.
pub const H_QUEUE: &str = "x-edc-queue";

/// Which dead letters a command is about.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub kind: Option<String>,
    pub batch: Option<String>,
    pub limit: usize,
}

/// Who is acting: `--actor`, else the login name.
pub fn actor(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The study protocols, which `show` and `replay` read a dead letter's body against.
fn protocols(settings: &Settings) -> anyhow::Result<Registry> {
    Registry::load(&settings.studies_dir)
        .map_err(|e| anyhow::anyhow!("study protocols are invalid:\n{e}"))
}

/// The database, which every command reads (who made each dead letter) and `replay` and `purge`
/// write (what they did). Connected before any dead letter is taken.
async fn connect_db(settings: &Settings) -> anyhow::Result<store::Connected> {
    store::connect(&settings.postgres.url, &settings.postgres)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}; the dlq commands need the database, to tell edc-ingest's own dead letters \
                 (their rejections rows) from the rest"
            )
        })
}

/// Records one action on a dead letter in `dlq_actions`: who did what to it, with what result.
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
        &[&action, &actor, &message_id, &record_id, &batch_id, &l.kind(), &sha, &result],
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
}
