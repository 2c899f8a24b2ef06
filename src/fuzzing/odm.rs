//! CDISC ODM XML: the ClinicalData reader (a message's path through the daemon, and `odm import`'s
//! path through a file), and the metadata reader through `study from-odm`.

use serde_json::Value;

use super::{MAX_BODY, odm_registry, pseudonymizer};
use crate::broker::inbound::{UploadBatch, upload_batch};
use crate::odm::clinical::{ClinicalReader, ReadError};
use crate::odm::model::{FormInstance, Position, Skipped};
use crate::odm::xml::Limits;
use crate::pipeline::odm::{OdmDelta, apply, map};
use crate::pipeline::validate::validate_items;
use crate::protocol::Registry;
use crate::tools::odm_import::{self, Context, Defaults, Messages, message};
use crate::tools::study_odm::{self, Refused};

/// Every form of a document, or the document's refusal (as the reader gives them).
fn read_all(doc: &[u8]) -> Vec<Result<FormInstance, String>> {
    ClinicalReader::new(doc, Limits::default())
        .map(|r| match r {
            Ok(f) => Ok(f),
            Err(ReadError::File(e)) => Err(format!("file: {e}")),
            Err(ReadError::Form(e)) => Err(format!("form: {e}")),
        })
        .collect()
}

/// A form as the writer promises to give it back: positions and skipped counts aside.
fn comparable(mut f: FormInstance) -> FormInstance {
    f.at = Position::default();
    f.skipped = Skipped::default();
    for item in &mut f.items {
        item.at = Position::default();
    }
    f
}

/// The ClinicalData reader on one document, as a message (mapped, applied to nothing stored,
/// validated) and as a file `odm import` reads (every form written back alone and re-read).
pub fn clinical(data: &[u8]) {
    if data.len() > MAX_BODY {
        return;
    }
    let registry = odm_registry();
    for read in read_all(data) {
        let Ok(form) = read else { continue };
        // The message path: what `worker::odm` does before the store.
        if let Ok(mapped) = map(&form, registry, pseudonymizer())
            && !matches!(mapped.delta, OdmDelta::Remove | OdmDelta::Context)
        {
            let items = match apply(&Value::Null, &mapped.delta) {
                Value::Object(items) => items,
                _ => Default::default(),
            };
            let _ = validate_items(&mapped.protocol, mapped.context(), items);
        }
        // Written back alone, it reads as the same form.
        if let Ok(doc) = crate::odm::write::write(&form) {
            let again = read_all(&doc);
            assert_eq!(again.len(), 1, "a written form reads back as one form");
            match again.into_iter().next() {
                Some(Ok(back)) => assert_eq!(
                    comparable(back),
                    comparable(form.clone()),
                    "a written form reads back changed"
                ),
                other => panic!("a written form is refused on reading: {other:?}"),
            }
        }
    }
    import_file(data, registry);
}

/// `odm import`'s messages: each document re-read maps to the record it was made for, and the
/// batch headers it is published with read back as the batch.
fn import_file(data: &[u8], registry: &Registry) {
    let options = odm_import::Options {
        defaults: Defaults {
            site: Some("SITE.01".into()),
            visit: Some("SE.SCREEN".into()),
        },
        ..Default::default()
    };
    let ctx = Context {
        registry,
        pseudonymizer: pseudonymizer(),
        options: &options,
    };
    let batch = message::Batch {
        id: uuid::Uuid::from_u128(0x0b1f_2c3d_4000_4000_8000_0000_0000_0001),
        size: 3,
    };
    for m in Messages::new(data, &ctx).flatten() {
        let forms = read_all(&m.document);
        assert_eq!(forms.len(), 1, "an import message holds one form");
        let Some(Ok(form)) = forms.into_iter().next() else {
            panic!("an import message is refused on reading");
        };
        let mapped = map(&form, registry, pseudonymizer()).expect("an import message maps");
        assert_eq!(
            mapped.record_id, m.record_id,
            "an import message's record changed"
        );
        assert_eq!(m.id, message::message_id(m.record_id, &m.document));
        let props = message::properties(m.id, &batch);
        let back = crate::broker::wire::properties_of(&crate::broker::wire::encode(&props));
        let read = back.as_ref().map(upload_batch);
        assert_eq!(
            read,
            Some(Ok(Some(UploadBatch {
                id: batch.id,
                size: 3
            }))),
            "the batch headers read back"
        );
    }
}

/// `study from-odm` on one document: the site and visit given or not (the first byte's low bits).
pub fn study_from_odm(data: &[u8]) {
    let Some((&flags, doc)) = data.split_first() else {
        return;
    };
    if doc.len() > MAX_BODY {
        return;
    }
    let opts = study_odm::Options {
        metadata_version: None,
        sites: if flags & 1 == 1 {
            vec!["SITE.X".into()]
        } else {
            vec![]
        },
        visit: (flags & 2 == 2).then(|| "SE.X".into()),
    };
    match study_odm::from_odm(doc, Limits::default(), &opts) {
        Ok(c) => {
            // What it prints loads with check-config's loader, and again to the same protocol.
            let registry = Registry::from_texts(&[("converted.yaml", &c.yaml)]);
            assert!(
                registry.is_ok(),
                "from-odm printed a protocol check-config refuses: {:?}",
                registry.err()
            );
        }
        Err(Refused::Invalid(why)) => panic!("from-odm made an invalid protocol: {why}"),
        Err(_) => {}
    }
}
