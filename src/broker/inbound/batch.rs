//! The upload batch of an ODM message, which its document has no place for: two headers, as
//! `edc-ingest odm import` sets them. An edc.crf.v1 record names its batch in its body instead.
//!
//! Both headers are the uploader's: read without trusting them. A message with neither belongs to
//! no batch; one with a header of the wrong type, a value out of range or only one of the two is
//! refused (`invalid`), with a reason that names the header and never quotes its value. A
//! well-formed id is kept even then, so that the refusal counts on the batch's receipt.

use lapin::BasicProperties;
use lapin::types::AMQPValue;
use uuid::Uuid;

pub use crate::pipeline::odm::UploadBatch;

/// The batch's id: a UUID as text (a long or short string).
pub const H_BATCH_ID: &str = "edc-batch-id";
/// The number of form instances in the batch: an AMQP integer of any width, 1 to 2,147,483,647.
pub const H_BATCH_SIZE: &str = "edc-batch-size";

/// The headers' batch refused: why, and the id if it alone was well-formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRefused {
    pub id: Option<Uuid>,
    pub reason: String,
}

/// The batch the message's headers name, if any (see the module's text).
pub fn upload_batch(properties: &BasicProperties) -> Result<Option<UploadBatch>, BatchRefused> {
    let headers = properties.headers().as_ref().map(|h| h.inner());
    let raw_id = headers.and_then(|h| h.get(H_BATCH_ID));
    let raw_size = headers.and_then(|h| h.get(H_BATCH_SIZE));
    let id = raw_id.map(batch_id);
    let size = raw_size.map(batch_size);
    let refused = |id: Option<Uuid>, reason: String| Err(BatchRefused { id, reason });
    match (id, size) {
        (None, None) => Ok(None),
        (Some(Ok(id)), Some(Ok(size))) => Ok(Some(UploadBatch { id, size })),
        (Some(Err(why)), _) => refused(None, why),
        (Some(Ok(id)), Some(Err(why))) => refused(Some(id), why),
        (Some(Ok(id)), None) => refused(
            Some(id),
            format!("header {H_BATCH_ID} is given without {H_BATCH_SIZE}"),
        ),
        (None, Some(_)) => refused(
            None,
            format!("header {H_BATCH_SIZE} is given without {H_BATCH_ID}"),
        ),
    }
}

fn batch_id(value: &AMQPValue) -> Result<Uuid, String> {
    let bytes = match value {
        AMQPValue::LongString(s) => s.as_bytes(),
        AMQPValue::ShortString(s) => s.as_str().as_bytes(),
        _ => return Err(format!("header {H_BATCH_ID} is not a string")),
    };
    // A UUID's text is at most 45 bytes (braced, with a urn prefix): nothing longer is parsed.
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| s.len() <= 45)
        .and_then(|s| Uuid::try_parse(s).ok())
        .ok_or_else(|| format!("header {H_BATCH_ID} is not a UUID"))
}

fn batch_size(value: &AMQPValue) -> Result<u32, String> {
    let n: Option<i128> = match *value {
        AMQPValue::ShortShortInt(n) => Some(n.into()),
        AMQPValue::ShortShortUInt(n) => Some(n.into()),
        AMQPValue::ShortInt(n) => Some(n.into()),
        AMQPValue::ShortUInt(n) => Some(n.into()),
        AMQPValue::LongInt(n) => Some(n.into()),
        AMQPValue::LongUInt(n) => Some(n.into()),
        AMQPValue::LongLongInt(n) => Some(n.into()),
        _ => None,
    };
    let n = n.ok_or_else(|| format!("header {H_BATCH_SIZE} is not an integer"))?;
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=i32::MAX as u32).contains(n))
        .ok_or_else(|| format!("header {H_BATCH_SIZE} is not between 1 and 2147483647"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldTable, LongString, ShortString};

    const ID: &str = "6f0c1f9e-2b8e-4d44-9a5e-7f1d2c3b4a59";

    fn with(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in headers {
            t.insert(ShortString::from(*k), v.clone());
        }
        BasicProperties::default().with_headers(t)
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s.to_string()))
    }

    #[test]
    fn no_headers_no_batch_and_both_well_formed_a_batch_of_any_integer_width() {
        assert_eq!(upload_batch(&BasicProperties::default()), Ok(None));
        assert_eq!(upload_batch(&with(&[("other", text(ID))])), Ok(None));
        let id = Uuid::parse_str(ID).unwrap();
        for size in [
            AMQPValue::ShortShortUInt(7),
            AMQPValue::ShortInt(7),
            AMQPValue::LongUInt(7),
            AMQPValue::LongLongInt(7),
        ] {
            let got = upload_batch(&with(&[(H_BATCH_ID, text(ID)), (H_BATCH_SIZE, size)]));
            assert_eq!(got, Ok(Some(UploadBatch { id, size: 7 })));
        }
        let short = AMQPValue::ShortString(ShortString::from(ID));
        let max = AMQPValue::LongLongInt(i32::MAX.into());
        let got = upload_batch(&with(&[(H_BATCH_ID, short), (H_BATCH_SIZE, max)]));
        assert_eq!(got.unwrap().unwrap().size, i32::MAX as u32);
    }

    #[test]
    fn every_malformed_header_is_refused_by_name_without_its_value() {
        let planted = "Jane Doe 1957-03-14";
        let id = Uuid::parse_str(ID).unwrap();
        let size = || (H_BATCH_SIZE, AMQPValue::LongLongInt(3));
        type Case<'a> = (Vec<(&'a str, AMQPValue)>, Option<Uuid>, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![(H_BATCH_ID, text(planted)), size()],
                None,
                "not a UUID",
            ),
            (
                vec![(H_BATCH_ID, text(&"a".repeat(1 << 20))), size()],
                None,
                "not a UUID",
            ),
            (
                vec![
                    (H_BATCH_ID, AMQPValue::LongString(vec![0xff, 0xfe].into())),
                    size(),
                ],
                None,
                "not a UUID",
            ),
            (
                vec![(H_BATCH_ID, AMQPValue::LongLongInt(1)), size()],
                None,
                "not a string",
            ),
            (
                vec![(H_BATCH_ID, text(ID))],
                Some(id),
                "without edc-batch-size",
            ),
            (vec![size()], None, "without edc-batch-id"),
            (
                vec![(H_BATCH_ID, text(ID)), (H_BATCH_SIZE, text(planted))],
                Some(id),
                "not an integer",
            ),
            (
                vec![
                    (H_BATCH_ID, text(ID)),
                    (H_BATCH_SIZE, AMQPValue::Double(3.0)),
                ],
                Some(id),
                "not an integer",
            ),
            (
                vec![
                    (H_BATCH_ID, text(ID)),
                    (H_BATCH_SIZE, AMQPValue::LongLongInt(0)),
                ],
                Some(id),
                "between 1 and",
            ),
            (
                vec![
                    (H_BATCH_ID, text(ID)),
                    (H_BATCH_SIZE, AMQPValue::LongLongInt(-5)),
                ],
                Some(id),
                "between 1 and",
            ),
            (
                vec![
                    (H_BATCH_ID, text(ID)),
                    (H_BATCH_SIZE, AMQPValue::LongLongInt(1 << 31)),
                ],
                Some(id),
                "between 1 and",
            ),
            (
                vec![
                    (H_BATCH_ID, text(ID)),
                    (H_BATCH_SIZE, AMQPValue::LongLongInt(i64::MIN)),
                ],
                Some(id),
                "between 1 and",
            ),
        ];
        for (headers, want_id, want) in cases {
            let got = upload_batch(&with(&headers)).unwrap_err();
            assert!(got.reason.contains(want), "{headers:?}: {}", got.reason);
            assert_eq!(got.id, want_id, "{headers:?}");
            assert!(
                !got.reason.contains("Jane") && got.reason.len() < 80,
                "{}",
                got.reason
            );
        }
    }
}
