//! What the daemon reads of the properties and headers an uploader set, read without trusting
//! them: no value can panic a conversion (a time no clock holds, an integer of any size or sign, a
//! header of any type), and no value PostgreSQL cannot store goes on towards the database.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::BasicProperties;
use lapin::types::AMQPValue;

use super::super::publish::H_TIMESTAMP_MS;
use crate::store::ingest::Reply;

/// Why a message whose `message_id` holds U+0000 is refused: the id is what its record, its
/// rejection and its batch receipt are filed under, and PostgreSQL's text cannot hold the character.
pub const NUL_MESSAGE_ID: &str = "the AMQP message_id holds a NUL character (U+0000), which cannot \
     be stored: publish the message again under another message_id";

/// Whether PostgreSQL's `text` and `jsonb` can hold this value: anything but U+0000.
pub fn storable(s: &str) -> bool {
    !s.contains('\0')
}

/// Why a message's answer cannot be sent, if it cannot: a `reply_to` with a control character is no
/// queue we answer to, and a NUL in either cannot be stored with the answer.
pub fn reply_fault(reply: &Reply) -> Option<&'static str> {
    if reply.to.chars().any(char::is_control) {
        Some("reply_to holds a control character")
    } else if !reply.correlation_id.as_deref().is_none_or(storable) {
        Some("correlation_id holds a NUL character (U+0000)")
    } else {
        None
    }
}

/// How far ahead of ours a publisher's clock may be and its time still be believed (as no wait at
/// all).
const CLOCK_AHEAD: Duration = Duration::from_secs(5 * 60);

/// The oldest publication time believed. An older one measures an outage or a replay rather than
/// the pipeline, if it is true at all, and one such sample would outweigh a day's others in the
/// histogram's sum.
const OLDEST: Duration = Duration::from_secs(7 * 24 * 3600);

/// The time a message was published, when its publisher or the broker stamped it: the
/// `timestamp_in_ms` header (milliseconds, as RabbitMQ's incoming-message interceptor and
/// `edc-ingest publish` set it), else the AMQP `timestamp` property (whole seconds, as AMQP defines
/// it, so a latency read from it is up to a second long). Either is believed only between [`OLDEST`]
/// before `now` and [`CLOCK_AHEAD`] after it; a time no clock can hold is no time at all.
#[doc(hidden)]
pub fn published_at(properties: &BasicProperties, now: SystemTime) -> Option<SystemTime> {
    let plausible = |at: SystemTime| {
        let after = now.checked_sub(OLDEST).unwrap_or(UNIX_EPOCH);
        let before = now.checked_add(CLOCK_AHEAD).unwrap_or(now);
        (after..=before).contains(&at).then_some(at)
    };
    let header_ms = properties
        .headers()
        .as_ref()
        .and_then(|h| match h.inner().get(H_TIMESTAMP_MS)? {
            AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
            AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
            AMQPValue::LongUInt(n) => Some(u64::from(*n)),
            AMQPValue::Timestamp(n) => Some(*n),
            _ => None,
        })
        .filter(|ms| *ms > 0)
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
        .and_then(plausible);
    let seconds = || {
        let s = (*properties.timestamp()).filter(|s| *s > 0)?;
        UNIX_EPOCH
            .checked_add(Duration::from_secs(s))
            .and_then(plausible)
    };
    header_ms.or_else(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldTable, ShortString};

    /// The receiving clock of these tests.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)
    }

    fn header(value: AMQPValue) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(ShortString::from(H_TIMESTAMP_MS), value);
        BasicProperties::default().with_headers(headers)
    }

    #[test]
    fn publication_time_prefers_the_millisecond_header() {
        let at = |ms: u64| Some(UNIX_EPOCH + Duration::from_millis(ms));
        let both = header(AMQPValue::LongLongInt(1_700_000_000_123)).with_timestamp(1_700_000_000);
        assert_eq!(published_at(&both, now()), at(1_700_000_000_123));
        let seconds = BasicProperties::default().with_timestamp(1_700_000_000);
        assert_eq!(published_at(&seconds, now()), at(1_700_000_000_000));
        assert_eq!(published_at(&BasicProperties::default(), now()), None);
        let zero = BasicProperties::default().with_timestamp(0);
        assert_eq!(published_at(&zero, now()), None);
        for value in [
            AMQPValue::LongInt(1),
            AMQPValue::LongUInt(u32::MAX),
            AMQPValue::Timestamp(1_700_000_000_000),
        ] {
            // Any integer type is read; a time out of range gives way to the property.
            let p = header(value.clone()).with_timestamp(1_700_000_000);
            let expected = match value {
                AMQPValue::Timestamp(ms) => at(ms),
                _ => at(1_700_000_000_000),
            };
            assert_eq!(published_at(&p, now()), expected, "{value:?}");
        }
    }

    #[test]
    fn no_time_an_uploader_sets_can_panic_or_pass_for_a_publication_time() {
        let now = now();
        // Past what SystemTime can hold (the AMQP timestamp 2^64-1 made the process exit 101).
        let far = BasicProperties::default().with_timestamp(u64::MAX);
        assert_eq!(published_at(&far, now), None);
        for value in [
            AMQPValue::LongLongInt(i64::MAX),
            AMQPValue::LongLongInt(i64::MIN),
            AMQPValue::LongLongInt(-1),
            AMQPValue::LongInt(i32::MIN),
            AMQPValue::Timestamp(u64::MAX),
            AMQPValue::LongString("1700000000000".into()),
            AMQPValue::Double(1.7e12),
        ] {
            assert_eq!(published_at(&header(value.clone()), now), None, "{value:?}");
            // A header not believed gives way to the property.
            let both = header(value.clone()).with_timestamp(1_700_000_000);
            let seconds = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            assert_eq!(published_at(&both, now), Some(seconds), "{value:?}");
        }
        // Ahead of our clock: believed within five minutes (the histogram counts it as no wait).
        let ahead = |s: u64| BasicProperties::default().with_timestamp(1_700_000_000 + s);
        assert!(published_at(&ahead(299), now).is_some());
        assert_eq!(published_at(&ahead(301), now), None);
        // Behind: believed for a week.
        let behind = |s: u64| BasicProperties::default().with_timestamp(1_700_000_000 - s);
        assert!(published_at(&behind(7 * 24 * 3600 - 1), now).is_some());
        assert_eq!(published_at(&behind(7 * 24 * 3600 + 1), now), None);
        // A receiving clock near the ends of what SystemTime holds: no overflow either.
        assert_eq!(published_at(&far, UNIX_EPOCH), None);
    }

    #[test]
    fn only_nul_is_unstorable_and_an_answer_needs_a_clean_address_and_id() {
        assert!(storable("c\u{1}\u{7f}\u{9b}\t é"));
        assert!(!storable("a\0b"));
        let reply = |to: &str, corr: Option<&str>| Reply {
            to: to.into(),
            correlation_id: corr.map(str::to_string),
        };
        assert_eq!(reply_fault(&reply("edc.reply.a", Some("c\u{1}"))), None);
        assert_eq!(reply_fault(&reply("edc.reply.a", None)), None);
        for bad in [
            "edc.reply.a\0",
            "edc.reply.\u{1b}[2J",
            "edc.reply.a\n",
            "edc\u{85}",
        ] {
            assert!(reply_fault(&reply(bad, None)).is_some(), "{bad:?}");
        }
        assert!(reply_fault(&reply("edc.reply.a", Some("k\0"))).is_some());
        assert!(!NUL_MESSAGE_ID.contains('\0'));
    }
}
