//! What is to become of a delivery, once its record is prepared and its store has returned.
//!
//! ```text
//! refused by the pipeline ─────────────> rejections row committed ─> DeadLetter
//! stored / duplicate ──────────────────────────────────────────────> Done (a re-upload is noted)
//! conflict ────────────────────────────> rejections row committed ─> DeadLetter `conflict`
//! database unavailable ───────────────> close the gate ────────────> Postpone
//! other error, attempts left ──────────────────────────────────────> Retry (a delay queue)
//! other error, last attempt, permanent ─> rejections row committed ─> DeadLetter `failed`
//! ```

use tokio::time::Instant;

use crate::broker::{Fate, Inbound};
use crate::pipeline::{RejectKind, Rejected};
use crate::store::ingest::{self, Pending, RejectionRow, Stored};
use crate::store::{PersistError, with_retries};

use super::Context;

/// The fate of a delivery whose record went to the committer.
pub async fn of_store(
    ctx: &Context,
    d: &Inbound,
    p: Pending,
    stored: Result<Stored, PersistError>,
    deadline: Instant,
) -> Fate {
    let record = &p.record;
    let rejected = match stored {
        Ok(Stored::Duplicate { reupload }) => {
            // A re-upload counts on its batch receipt; a reply_to wants its answer. A plain
            // redelivery needs neither, and costs no write.
            if (reupload && record.batch_id.is_some()) || p.reply.is_some() {
                let noted = with_retries(deadline, || async {
                    let client = ctx.share.get().await?;
                    ingest::note_duplicate(&client, &p).await
                })
                .await;
                if let Err(e) = noted {
                    return match e {
                        PersistError::Unavailable(_) => unavailable(ctx, e),
                        other => Fate::Postpone(other.to_string()),
                    };
                }
            }
            return Fate::Done(Stored::Duplicate { reupload });
        }
        Ok(Stored::Conflict) => Rejected::of_record(
            RejectKind::Conflict,
            format!(
                "record {} version {} is already stored with a different payload",
                record.record_id, record.version
            ),
            record,
        ),
        Ok(stored) => return Fate::Done(stored),
        Err(e @ PersistError::Unavailable(_)) => return unavailable(ctx, e),
        Err(e @ PersistError::Permanent(_)) => {
            Rejected::of_record(RejectKind::Failed, e.to_string(), record)
        }
        Err(PersistError::Retryable(reason)) | Err(PersistError::Contention(reason)) => {
            let failed = d.failed_attempts.saturating_add(1);
            if failed < ctx.settings.retry.max_attempts {
                return Fate::Retry { failed, reason };
            }
            let reason = format!("{reason}; gave up after {failed} attempts");
            let r = Rejected::of_record(RejectKind::Failed, reason, record);
            return with_attempts(reject(ctx, d, r, deadline).await, failed);
        }
    };
    reject(ctx, d, rejected, deadline).await
}

/// Commits the `rejections` row (with the batch receipt and the `reply_to` answer); the dead
/// letter itself is published when the delivery is settled.
pub async fn reject(ctx: &Context, d: &Inbound, rejected: Rejected, deadline: Instant) -> Fate {
    let attempts = d.failed_attempts.saturating_add(1);
    let row = RejectionRow {
        rejected: &rejected,
        message_id: d.message_id.as_deref(),
        body_sha256: &d.body_sha256,
        attempts: i32::try_from(attempts).unwrap_or(i32::MAX),
        consumer: &ctx.consumer_name,
        reply: d.reply.as_ref(),
    };
    let written = with_retries(deadline, || async {
        let client = ctx.share.get().await?;
        ingest::record_rejection(&client, &row).await
    })
    .await;
    match written {
        Ok(()) => Fate::DeadLetter { rejected, attempts },
        Err(e) => unavailable(ctx, e),
    }
}

/// A dead letter's attempt count, if the fate is one.
pub fn with_attempts(fate: Fate, attempts: u32) -> Fate {
    match fate {
        Fate::DeadLetter { rejected, .. } => Fate::DeadLetter { rejected, attempts },
        other => other,
    }
}

/// An outage: close the gate so consumption pauses, and give the message back through the delay
/// queue.
pub fn unavailable(ctx: &Context, e: PersistError) -> Fate {
    let reason = e.to_string();
    ctx.gate.close(&reason);
    Fate::Postpone(reason)
}

/// The panic's own message, unless it quotes any text found in the body (a panic message built from
/// a value could carry patient data into headers and logs).
pub fn panic_reason(panic: &(dyn std::any::Any + Send), body: &[u8]) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".into());
    let quotes_body = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| quotes_any_string(&v, &msg))
        .unwrap_or(true);
    let msg: String = msg.chars().take(300).collect();
    if quotes_body {
        "job panicked (its message quoted the record and is withheld)".to_string()
    } else {
        format!("job panicked: {msg}")
    }
}

fn quotes_any_string(v: &serde_json::Value, msg: &str) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.len() >= 3 && msg.contains(s.as_str()),
        Value::Number(n) => {
            let s = n.to_string();
            s.len() >= 3 && msg.contains(&s)
        }
        Value::Array(a) => a.iter().any(|x| quotes_any_string(x, msg)),
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| (k.len() >= 3 && msg.contains(k.as_str())) || quotes_any_string(x, msg)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_that_quote_the_record_are_withheld() {
        let body = br#"{"identifiers": {"full_name": "Ada Lovelace"}}"#;
        let quoting: Box<dyn std::any::Any + Send> =
            Box::new(String::from("bad name Ada Lovelace"));
        assert!(!panic_reason(&*quoting, body).contains("Ada"));
        let plain: Box<dyn std::any::Any + Send> = Box::new("index out of bounds");
        assert_eq!(
            panic_reason(&*plain, body),
            "job panicked: index out of bounds"
        );
        assert!(panic_reason(&*plain, b"\xff").contains("withheld"));
    }

    #[test]
    fn a_dead_letter_takes_the_attempt_count_and_other_fates_are_kept() {
        let dl = Fate::DeadLetter {
            rejected: Rejected::new(RejectKind::Poison, "crashed"),
            attempts: 1,
        };
        assert!(matches!(
            with_attempts(dl, 3),
            Fate::DeadLetter { attempts: 3, .. }
        ));
        assert!(matches!(
            with_attempts(Fate::Postpone("x".into()), 3),
            Fate::Postpone(_)
        ));
    }
}
