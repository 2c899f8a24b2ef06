//! A lane's pump: moves its consumer's deliveries into the lane's slots, and watches the session.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::Channel;
use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::inbound::{Inbound, Link};
use super::within;
use crate::config::Settings;
use crate::health::Health;
use crate::lane::Lane;

/// What every pump of the daemon shares.
pub(super) struct Pumps<'a> {
    pub settings: &'a Settings,
    /// Whether the database is usable: a pump stops when it closes.
    pub gate: &'a watch::Receiver<bool>,
    pub shutdown: &'a CancellationToken,
    /// Beaten every second: the supervisor is turning.
    pub health: &'a Health,
}

/// Why a pump stopped.
pub(super) enum End {
    Shutdown,
    /// The database gate closed.
    Paused,
    Lost(String),
}

/// How long a lane may wait for deliveries, with a free slot, before it asks the broker whether its
/// queue is really empty.
const IDLE_CHECK: Duration = Duration::from_secs(10);

/// Moves one lane's deliveries into its slots until shutdown, a database pause, or the session dies.
/// A slot is reserved before a delivery is taken, so no delivery is ever held while waiting: the
/// future can be dropped at any await without losing one.
///
/// Liveness: a dead TCP connection may go unnoticed by a quiet consumer, so the connection is looked
/// at every second; and a consumer that gets nothing while its queue holds ready messages (a
/// half-dead connection, a queue that came back without our consumer) is a lost session too. That
/// is the "reconnected but stopped consuming" state other consumers end up in.
pub(super) async fn pump(
    sup: &Pumps<'_>,
    lane: Lane,
    consumer: &mut lapin::Consumer,
    slots: &mpsc::Sender<Inbound>,
    link: &Arc<Link>,
    channel: &Channel,
) -> End {
    let mut gate = sup.gate.clone();
    let mut watchdog = tokio::time::interval(Duration::from_secs(1));
    // Since when this lane has been waiting with a free slot and nothing arrived.
    let mut idle_since: Option<tokio::time::Instant> = None;
    let (urgent_prefetch, normal_prefetch) = lane_prefetch(sup.settings.prefetch());
    let prefetch = usize::from(match lane {
        Lane::Urgent => urgent_prefetch,
        Lane::Normal => normal_prefetch,
    });
    loop {
        if !*gate.borrow_and_update() {
            return End::Paused;
        }
        let permit = tokio::select! {
            biased;
            _ = sup.shutdown.cancelled() => return End::Shutdown,
            _ = gate.changed() => continue,
            permit = slots.reserve() => match permit {
                Ok(p) => p,
                Err(_) => return End::Shutdown,
            },
            // Every worker busy: still turning.
            _ = watchdog.tick() => {
                sup.health.beat();
                continue;
            }
        };
        let next = tokio::select! {
            biased;
            _ = sup.shutdown.cancelled() => return End::Shutdown,
            _ = gate.changed() => continue,
            _ = link.broken.cancelled() => return End::Lost(link.why_broken().to_string()),
            _ = watchdog.tick() => {
                sup.health.beat();
                if !channel.status().connected() {
                    return End::Lost("the broker connection is down".into());
                }
                if !link.publisher.status().connected() {
                    return End::Lost("the publisher channel is closed".into());
                }
                // Only idle if the broker may send more: this lane's unacked deliveries are below
                // its prefetch (slow jobs that use it all up are not a stall).
                if link.acks.unacked(lane) >= prefetch {
                    idle_since = None;
                    continue;
                }
                let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= IDLE_CHECK {
                    if let Err(e) = ready_while_idle(sup, lane, channel, since.elapsed()).await {
                        return End::Lost(e);
                    }
                    idle_since = None;
                }
                continue;
            }
            next = consumer.next() => next,
        };
        idle_since = None;
        match next {
            Some(Ok(delivery)) => {
                link.acks.taken(delivery.delivery_tag, lane);
                permit.send(Inbound::new(delivery, lane, link.clone()));
            }
            Some(Err(e)) => return End::Lost(e.to_string()),
            None => return End::Lost("the broker cancelled a consumer".into()),
        }
    }
}

/// Asks the broker how many messages are ready in the lane's queue; any at all, while this consumer
/// has had a free slot and received nothing for `idle`, means the session no longer consumes.
async fn ready_while_idle(
    sup: &Pumps<'_>,
    lane: Lane,
    channel: &Channel,
    idle: Duration,
) -> Result<(), String> {
    let queue = sup.settings.amqp.queue_of(lane);
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declare = channel.queue_declare(ShortString::from(queue), passive, FieldTable::default());
    let limit = sup.settings.amqp.operation_timeout;
    let ready = within(limit, "checking the queue", declare)
        .await
        .map_err(|e| e.to_string())?
        .message_count();
    if ready > 0 {
        return Err(format!(
            "nothing delivered for {idle:.0?} with {ready} messages ready in {queue}"
        ));
    }
    Ok(())
}

/// Prefetch of each lane: the urgent lane holds one delivery, the normal lane the rest.
pub(super) fn lane_prefetch(total: usize) -> (u16, u16) {
    let total = u16::try_from(total).unwrap_or(u16::MAX);
    (1, total.saturating_sub(1).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_urgent_lane_takes_one_of_the_prefetch_and_the_normal_lane_the_rest() {
        assert_eq!(lane_prefetch(16), (1, 15));
        assert_eq!(lane_prefetch(8 * 64), (1, 511));
        // One worker: the urgent lane's delivery comes on top (the one exception to the rule).
        assert_eq!(lane_prefetch(1), (1, 1));
        assert_eq!(lane_prefetch(1_000_000), (1, u16::MAX - 1));
    }
}
