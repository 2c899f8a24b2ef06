//! Group commit: the records that are ready go to the database together.
//!
//! ```text
//!  worker 1 ─ prepared records ─┐                    ┌─> outcome of each record, back to its worker,
//!  worker 2 ─ prepared records ─┼─> [urgent][normal] ─┤   which acks its delivery after the COMMIT
//!  worker N ─ prepared records ─┘   committer task(s) ┘
//!                                   take everything ready (urgent first), store it with ONE statement
//! ```
//!
//! Workers validate and de-identify their own deliveries and hand the results here. A committer task
//! takes whatever has been handed over by the time it is free, up to [`MAX_GROUP`] records, and
//! stores it with one call of `ingest_records`: one statement, one transaction, on a connection of
//! the shared pool. Each record's outcome then goes back to its worker. Under light load a record
//! waits for no one: an idle committer takes it at once. Under load, the records that arrive while
//! one transaction commits make up the next one, so the busier the daemon, the more one COMMIT
//! carries.
//!
//! One bad record never fails the others: a statement that fails for anything but an outage is split
//! in halves, down to the record that fails alone. A key that appears twice among the records taken
//! (a re-upload beside its original) is stored by a later statement, after the first has committed,
//! so that it is still told duplicate from conflict. Records from the fast lane are taken first.
//!
//! One slow record never holds the others either: a record whose key another session is storing at
//! that moment (another replica with the same record) is left out of the statement and comes back
//! [`Attempt::Busy`]; its worker stores it again with [`Committer::alone`], on a connection of its
//! own, waiting for the other session while this task goes on with the next group.
//!
//! Nothing here acks anything, and nothing here waits for the broker. If a committer task fails,
//! the records it held get an error back and their deliveries are retried.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use deadpool_postgres::Pool;
use futures::FutureExt;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error};

use super::ingest::{self, Attempt, OnBusy, Pending, Stored};
use super::{PersistError, WorkerShare, with_retries};
use crate::lane::Lane;
use crate::stats::Stats;

/// The most records one statement stores.
pub const MAX_GROUP: usize = 256;

/// The outcome of one record: done (stored, or found stored), busy (not written: store it again
/// with [`Committer::alone`]), or an error.
pub type Outcome = (Pending, Result<Attempt, PersistError>);

struct Request {
    items: Vec<Pending>,
    deadline: Instant,
    reply: oneshot::Sender<Vec<Outcome>>,
}

/// The workers' side: hands records to the committer tasks, and stores a busy record alone.
#[derive(Clone)]
pub struct Committer {
    urgent: mpsc::Sender<Request>,
    normal: mpsc::Sender<Request>,
    /// For a busy record, stored alone by its worker.
    share: WorkerShare,
    key_id: Arc<str>,
    stats: Arc<Stats>,
}

type Queue = Arc<Mutex<mpsc::Receiver<Request>>>;

impl Committer {
    /// Starts `tasks` committer tasks on `pool`. `capacity` bounds the requests waiting (one per
    /// worker is enough: a worker waits for its answer before it hands over more). The tasks end
    /// once every `Committer` is dropped and the requests handed over are answered.
    /// `key_id`: the pseudonymisation key's id, stored with every record.
    pub fn start(
        pool: Pool,
        share: WorkerShare,
        tasks: usize,
        capacity: usize,
        key_id: String,
        stats: Arc<Stats>,
    ) -> (Committer, Vec<JoinHandle<()>>) {
        let key_id: Arc<str> = key_id.into();
        let (urgent, urgent_rx) = mpsc::channel(capacity.max(1));
        let (normal, normal_rx) = mpsc::channel(capacity.max(1));
        let queues: (Queue, Queue) = (
            Arc::new(Mutex::new(urgent_rx)),
            Arc::new(Mutex::new(normal_rx)),
        );
        let handles = (0..tasks.max(1))
            .map(|_| {
                let task = Task {
                    pool: pool.clone(),
                    key_id: key_id.clone(),
                    stats: stats.clone(),
                };
                tokio::spawn(task.run(queues.clone()))
            })
            .collect();
        let committer = Committer {
            urgent,
            normal,
            share,
            key_id,
            stats,
        };
        (committer, handles)
    }

    /// Stores `items` (with whatever else is ready) and returns each with its outcome, in order.
    /// Past `deadline` nothing is retried any more; the caller bounds its own wait.
    pub async fn commit(&self, lane: Lane, items: Vec<Pending>, deadline: Instant) -> Vec<Outcome> {
        let (reply, answer) = oneshot::channel();
        let queue = match lane {
            Lane::Urgent => &self.urgent,
            Lane::Normal => &self.normal,
        };
        let request = Request {
            items,
            deadline,
            reply,
        };
        if let Err(refused) = queue.send(request).await {
            return failed(refused.0.items, "the committer has stopped");
        }
        answer.await.unwrap_or_default()
    }

    /// Stores one record that came back [`Attempt::Busy`], alone, on a connection of the pool:
    /// its statement waits for the session storing the same key (at most `lock_timeout` a try),
    /// and only this record waits with it. Contention is retried while `deadline` allows.
    pub async fn alone(&self, item: &Pending, deadline: Instant) -> Result<Stored, PersistError> {
        let stored = with_retries(deadline, || async {
            let client = self.share.get().await?;
            ingest::store(&*client, &[item], &self.key_id, OnBusy::Wait).await
        })
        .await?;
        self.stats.record_group(1);
        match stored.first() {
            Some(Attempt::Done(stored)) => {
                if let Stored::Created(status) = stored {
                    self.stats.stored(*status);
                }
                Ok(*stored)
            }
            _ => Err(PersistError::Retryable(
                "a record stored alone came back busy".into(),
            )),
        }
    }
}

/// Every item, with the same error.
fn failed(items: Vec<Pending>, why: &str) -> Vec<Outcome> {
    items
        .into_iter()
        .map(|p| (p, Err(PersistError::Retryable(why.to_string()))))
        .collect()
}

/// One committer task.
struct Task {
    pool: Pool,
    key_id: Arc<str>,
    stats: Arc<Stats>,
}

impl Task {
    async fn run(self, (urgent, normal): (Queue, Queue)) {
        while let Some(requests) = take(&urgent, &normal).await {
            // A panic here must not end the task: the requests it held are dropped, so their
            // workers get an error back (see `Committer::commit`) and retry their deliveries.
            let group = AssertUnwindSafe(self.commit_group(requests)).catch_unwind();
            if group.await.is_err() {
                error!("a group commit panicked; its records are retried");
            }
        }
    }
}

/// Waits for the first request (urgent first), then takes whatever else is ready, up to
/// [`MAX_GROUP`] records. None once no worker can send any more.
async fn take(urgent: &Queue, normal: &Queue) -> Option<Vec<Request>> {
    let mut urgent = urgent.lock().await;
    let mut normal = normal.lock().await;
    let first = tokio::select! {
        biased;
        r = urgent.recv() => r,
        r = normal.recv() => r,
    };
    let first = match first {
        Some(r) => r,
        // One channel closed: the other may still hold requests.
        None => match urgent.try_recv().or_else(|_| normal.try_recv()) {
            Ok(r) => r,
            Err(_) => return None,
        },
    };
    let mut records = first.items.len();
    let mut requests = vec![first];
    while records < MAX_GROUP {
        match urgent.try_recv().or_else(|_| normal.try_recv()) {
            Ok(r) => {
                records += r.items.len();
                requests.push(r);
            }
            Err(_) => break,
        }
    }
    Some(requests)
}

impl Task {
    async fn commit_group(&self, requests: Vec<Request>) {
        let deadline = requests
            .iter()
            .map(|r| r.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        let items: Vec<&Pending> = requests.iter().flat_map(|r| &r.items).collect();
        let mut results: Vec<Option<Result<Attempt, PersistError>>> = vec![None; items.len()];
        for round in rounds(&items) {
            let batch: Vec<&Pending> = round.iter().map(|&i| items[i]).collect();
            let stored = self.store_split(&batch, deadline).await;
            for (i, outcome) in round.into_iter().zip(stored) {
                results[i] = Some(outcome);
            }
        }
        let mut results = results.into_iter();
        for request in requests {
            let outcomes: Vec<Outcome> = request
                .items
                .into_iter()
                .map(|p| {
                    let result = results.next().flatten().unwrap_or_else(|| {
                        Err(PersistError::Retryable("no outcome was decided".into()))
                    });
                    (p, result)
                })
                .collect();
            // A worker that stopped waiting (its deadline passed) no longer needs the answer.
            let _ = request.reply.send(outcomes);
        }
    }

    /// Stores `items` with one statement; if it fails for anything but an outage, splits them in
    /// halves and stores each, down to single records, so that one bad record fails alone. A
    /// record whose key another session is storing comes back busy, without holding the others.
    fn store_split<'a>(
        &'a self,
        items: &'a [&'a Pending],
        deadline: Instant,
    ) -> futures::future::BoxFuture<'a, Vec<Result<Attempt, PersistError>>> {
        Box::pin(async move {
            let stored = with_retries(deadline, || async {
                let client = self.pool.get().await?;
                ingest::store(&client, items, &self.key_id, OnBusy::Skip).await
            })
            .await;
            match stored {
                Ok(outcomes) => {
                    self.stats.record_group(items.len());
                    for outcome in &outcomes {
                        if let Attempt::Done(Stored::Created(status)) = outcome {
                            self.stats.stored(*status);
                        }
                    }
                    outcomes.into_iter().map(Ok).collect()
                }
                Err(e @ PersistError::Unavailable(_)) => {
                    items.iter().map(|_| Err(e.clone())).collect()
                }
                Err(e) if items.len() == 1 => vec![Err(e)],
                Err(e) => {
                    debug!(error = %e, size = items.len(), "a group failed; splitting it");
                    self.stats.group_splits.fetch_add(1, Relaxed);
                    let (left, right) = items.split_at(items.len() / 2);
                    let mut out = self.store_split(left, deadline).await;
                    out.extend(self.store_split(right, deadline).await);
                    out
                }
            }
        })
    }
}

/// The records in statements that each hold a natural key at most once: the first occurrence of
/// every key in the first, a repeat in the next, and so on. Indexes into `items`, in order.
fn rounds(items: &[&Pending]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<(uuid::Uuid, i32), usize> = HashMap::with_capacity(items.len());
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, p) in items.iter().enumerate() {
        let n = seen
            .entry((p.record.record_id, p.record.version))
            .or_insert(0);
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(i);
        *n += 1;
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::deidentify::{Deidentified, Status};

    fn pending(record_id: uuid::Uuid, version: i32) -> Pending {
        Pending {
            record: Deidentified {
                record_id,
                version,
                study: "S".into(),
                site: "X".into(),
                subject: "P".into(),
                visit: "V".into(),
                form: "F".into(),
                captured_at: chrono::DateTime::parse_from_rfc3339("2026-11-20T10:15:00Z").unwrap(),
                entered_by: "crc".into(),
                batch_id: None,
                batch_size: None,
                protocol_version: "1".into(),
                items: serde_json::json!({}),
                pseudonyms: serde_json::json!({}),
                birth_year: None,
                status: Status::Accepted,
                findings: vec![],
                alerts: vec![],
            },
            message_id: None,
            payload_sha256: String::new(),
            reply: None,
            event_headers: serde_json::Value::Null,
            uploaded_by: None,
            odm: None,
        }
    }

    #[test]
    fn a_repeated_key_waits_for_a_later_statement() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let items = [
            pending(a, 1),
            pending(b, 1),
            pending(a, 1),
            pending(a, 2),
            pending(a, 1),
        ];
        let refs: Vec<&Pending> = items.iter().collect();
        assert_eq!(rounds(&refs), vec![vec![0, 1, 3], vec![2], vec![4]]);
    }

    #[test]
    fn distinct_keys_go_in_one_statement() {
        let items: Vec<Pending> = (0..5).map(|_| pending(uuid::Uuid::new_v4(), 1)).collect();
        let refs: Vec<&Pending> = items.iter().collect();
        assert_eq!(rounds(&refs), vec![vec![0, 1, 2, 3, 4]]);
    }
}
