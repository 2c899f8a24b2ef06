//! One message per form instance: what the command line fills in (`--site`, `--visit`), the
//! document ([`crate::odm::write`]: a standalone ODM 1.3.2 document holding that form alone, with
//! its ClinicalData, SubjectData and SiteRef, StudyEventData and FormData with their repeat keys,
//! TransactionTypes and AuditRecord as read), its message id and its AMQP properties.
//!
//! The message id is derived from the record's identity and the document:
//! `UUIDv5(MESSAGE_NAMESPACE, record_id (16 bytes) || SHA-256(document))`. The same file imported
//! twice gives the same ids; a form whose values changed gives another.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use sha2::{Digest, Sha256};
use uuid::{Uuid, uuid};

use crate::broker::publish::stamped;
use crate::odm::model::FormInstance;

/// The content type of every message `odm import` publishes.
pub const CONTENT_TYPE: &str = "application/vnd.cdisc.odm+xml";

/// The namespace of the message ids. Fixed for good: changing it would give a re-import new ids.
pub const MESSAGE_NAMESPACE: Uuid = uuid!("e8e29ae2-a9cc-4e5c-aa2b-c943714fc3cc");

/// The upload batch a message belongs to (a UUID, as text), and the batch's size (an integer):
/// headers, since an ODM document has no place for them; the daemon reads them.
pub use crate::broker::inbound::{H_BATCH_ID, H_BATCH_SIZE};

/// What the command line gives for what a file does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    /// `--site`: the site of a subject with no SiteRef.
    pub site: Option<String>,
    /// `--visit`: the study event of a FormData directly under SubjectData.
    pub visit: Option<String>,
}

impl Defaults {
    /// Fills in what `form` lacks. The document published then says it, so the daemon needs no
    /// default of its own and the record is the one a dry run names.
    pub fn fill(&self, form: &mut FormInstance) {
        if form.site_oid.is_none() {
            form.site_oid.clone_from(&self.site);
        }
        if form.event_oid.is_none() {
            form.event_oid.clone_from(&self.visit);
        }
    }
}

/// The upload batch of one import: one receipt per file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    pub id: Uuid,
    /// The forms to be published (the first pass counted them).
    pub size: u64,
}

/// See the module's text.
pub fn message_id(record_id: Uuid, document: &[u8]) -> Uuid {
    let mut name = Vec::with_capacity(16 + 32);
    name.extend_from_slice(record_id.as_bytes());
    name.extend_from_slice(&Sha256::digest(document));
    Uuid::new_v5(&MESSAGE_NAMESPACE, &name)
}

/// Persistent, the ODM content type, the message id, the batch headers and the time of
/// publication (as `publish` stamps it).
pub fn properties(message_id: Uuid, batch: &Batch) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from(H_BATCH_ID),
        AMQPValue::LongString(LongString::from(batch.id.to_string())),
    );
    headers.insert(
        ShortString::from(H_BATCH_SIZE),
        AMQPValue::LongLongInt(i64::try_from(batch.size).unwrap_or(i64::MAX)),
    );
    stamped(
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from(CONTENT_TYPE))
            .with_message_id(ShortString::from(message_id.to_string()))
            .with_headers(headers),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odm::clinical::ClinicalReader;
    use crate::odm::xml::Limits;

    const DOC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ODM xmlns="http://www.cdisc.org/ns/odm/v1.3" ODMVersion="1.3.2" FileOID="F.1" FileType="Snapshot">
  <ClinicalData StudyOID="ST.1" MetaDataVersionOID="MDV.1">
    <SubjectData SubjectKey="S-1">
      <FormData FormOID="F.VS" FormRepeatKey="2">
        <ItemGroupData ItemGroupOID="IG.VS"><ItemData ItemOID="I.PULSE" Value="64"/></ItemGroupData>
      </FormData>
    </SubjectData>
    <SubjectData SubjectKey="S-2">
      <SiteRef LocationOID="SITE.9"/>
      <StudyEventData StudyEventOID="SE.2" StudyEventRepeatKey="3">
        <FormData FormOID="F.VS"/>
      </StudyEventData>
    </SubjectData>
  </ClinicalData>
</ODM>"#;

    fn forms() -> Vec<FormInstance> {
        ClinicalReader::new(DOC.as_bytes(), Limits::default())
            .map(|f| f.expect("a form"))
            .collect()
    }

    #[test]
    fn defaults_fill_only_what_the_file_does_not_say() {
        let defaults = Defaults {
            site: Some("SITE.1".into()),
            visit: Some("SE.1".into()),
        };
        let mut all = forms();
        for f in &mut all {
            defaults.fill(f);
        }
        assert_eq!(all[0].site_oid.as_deref(), Some("SITE.1"));
        assert_eq!(all[0].event_oid.as_deref(), Some("SE.1"));
        assert_eq!(all[0].event_repeat, None);
        assert_eq!(all[1].site_oid.as_deref(), Some("SITE.9"));
        assert_eq!(all[1].event_oid.as_deref(), Some("SE.2"));
        // Nothing given: nothing filled.
        let mut bare = forms();
        Defaults::default().fill(&mut bare[0]);
        assert_eq!(
            (bare[0].site_oid.clone(), bare[0].event_oid.clone()),
            (None, None)
        );
    }

    #[test]
    fn the_document_of_a_filled_form_reads_back_as_that_form_alone() {
        let defaults = Defaults {
            site: Some("SITE.1".into()),
            visit: Some("SE.1".into()),
        };
        let mut form = forms().remove(0);
        defaults.fill(&mut form);
        let doc = crate::odm::write::write(&form).unwrap();
        let back: Vec<FormInstance> = ClinicalReader::new(&doc[..], Limits::default())
            .map(|f| f.unwrap())
            .collect();
        assert_eq!(back.len(), 1);
        let b = &back[0];
        assert_eq!(
            (&b.study_oid, &b.subject_key, &b.site_oid, &b.event_oid),
            (
                &form.study_oid,
                &form.subject_key,
                &form.site_oid,
                &form.event_oid
            )
        );
        assert_eq!(
            (&b.form_oid, &b.form_repeat),
            (&form.form_oid, &form.form_repeat)
        );
        assert_eq!(b.items, {
            let mut items = form.items.clone();
            for (i, j) in items.iter_mut().zip(&b.items) {
                i.at = j.at;
            }
            items
        });
    }

    #[test]
    fn message_ids_follow_the_record_and_the_content() {
        let record = Uuid::from_u128(7);
        let a = message_id(record, b"<ODM/>");
        assert_eq!(a, message_id(record, b"<ODM/>"));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, message_id(record, b"<ODM />"));
        assert_ne!(a, message_id(Uuid::from_u128(8), b"<ODM/>"));
    }

    #[test]
    fn properties_are_persistent_odm_with_the_id_and_the_batch() {
        let batch = Batch {
            id: Uuid::from_u128(1),
            size: 12,
        };
        let p = properties(Uuid::from_u128(2), &batch);
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.content_type().as_ref().map(|c| c.as_str()),
            Some(CONTENT_TYPE)
        );
        assert_eq!(
            p.message_id().as_ref().map(|m| m.to_string()),
            Some(Uuid::from_u128(2).to_string())
        );
        let headers = p.headers().as_ref().unwrap().inner();
        assert_eq!(
            headers.get(H_BATCH_ID),
            Some(&AMQPValue::LongString(LongString::from(
                batch.id.to_string()
            )))
        );
        assert_eq!(headers.get(H_BATCH_SIZE), Some(&AMQPValue::LongLongInt(12)));
        assert!(p.timestamp().is_some());
    }
}
