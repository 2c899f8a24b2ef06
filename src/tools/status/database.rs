//! The database's part of `status`: the dead letters the daemons recorded (`rejections`) in the last
//! hour and day, by kind, and the upload batches still open (an expected size, no `completed_at`)
//! with their progress, oldest first.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::Settings;
use crate::pipeline::RejectKind;
use crate::store;

/// Open batches listed (the oldest); the count covers them all.
const OPEN_BATCHES_LISTED: i64 = 10;

#[derive(Clone, Debug, Serialize)]
pub struct DatabasePart {
    pub answered: bool,
    pub error: Option<String>,
    /// Every kind, in the order of the README's table, with zeros.
    pub dead_letters_by_kind: Vec<KindCount>,
    pub open_batches: Option<OpenBatches>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KindCount {
    pub kind: &'static str,
    pub last_hour: i64,
    pub last_day: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpenBatches {
    pub count: i64,
    /// The oldest open batches (by their first outcome), at most 10.
    pub oldest: Vec<OpenBatch>,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpenBatch {
    pub batch_id: String,
    pub expected: i32,
    /// Messages of the batch that have their outcome.
    pub outcomes: i64,
    pub first_outcome_at: String,
}

pub(super) async fn database_part(settings: &Settings) -> DatabasePart {
    let read = async {
        let pg = &settings.postgres;
        let db = store::connect(&pg.url, pg).await?;
        let result = async {
            let by_kind = db
                .query(
                    "SELECT kind,
                            count(*) FILTER (WHERE rejected_at > now() - interval '1 hour'),
                            count(*)
                     FROM rejections WHERE rejected_at > now() - interval '1 day'
                     GROUP BY kind",
                    &[],
                )
                .await?;
            let by_kind: HashMap<String, (i64, i64)> = by_kind
                .iter()
                .map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2))))
                .collect();
            let count: i64 = db
                .query_one(
                    "SELECT count(*) FROM batches WHERE completed_at IS NULL AND expected IS NOT NULL",
                    &[],
                )
                .await?
                .get(0);
            let oldest = db
                .query(
                    "SELECT b.batch_id::text, b.expected,
                            coalesce((SELECT sum(c.accepted + c.queried + c.duplicates + c.dead_lettered_total)
                                      FROM batch_counts c WHERE c.batch_id = b.batch_id), 0)::bigint,
                            b.first_seen
                     FROM batches b WHERE b.completed_at IS NULL AND b.expected IS NOT NULL
                     ORDER BY b.first_seen LIMIT $1",
                    &[&OPEN_BATCHES_LISTED],
                )
                .await?
                .iter()
                .map(|r| OpenBatch {
                    batch_id: r.get(0),
                    expected: r.get(1),
                    outcomes: r.get(2),
                    first_outcome_at: r
                        .get::<_, DateTime<Utc>>(3)
                        .to_rfc3339_opts(SecondsFormat::Secs, true),
                })
                .collect();
            Ok::<_, anyhow::Error>((by_kind, OpenBatches { count, oldest }))
        }
        .await;
        db.close().await;
        result
    };
    match read.await {
        Ok((by_kind, open)) => DatabasePart {
            answered: true,
            error: None,
            dead_letters_by_kind: RejectKind::ALL
                .iter()
                .map(|k| {
                    let (last_hour, last_day) =
                        by_kind.get(k.as_str()).copied().unwrap_or_default();
                    KindCount {
                        kind: k.as_str(),
                        last_hour,
                        last_day,
                    }
                })
                .collect(),
            open_batches: Some(open),
        },
        Err(e) => DatabasePart {
            answered: false,
            error: Some(format!("{e:#}")),
            dead_letters_by_kind: Vec::new(),
            open_batches: None,
        },
    }
}
