//! One form instance back to a minimal ODM 1.3.2 document: what `odm import` publishes, one
//! message per FormData, for the daemon to read with the same reader.
//!
//! UTF-8, the ODM 1.3 namespace, and only the chain that gives the form its context: ODM (FileOID,
//! FileType, CreationDateTime, AsOfDateTime when known) > ClinicalData > SubjectData (with its
//! TransactionType) > SiteRef > StudyEventData (when the form has an event) > FormData (with the
//! nearest AuditRecord) > ItemGroupData (one per run of items of the same group, repeat key and
//! TransactionType) > ItemData or the typed form the value came in, each with its own
//! AuditRecord and unit. An item's AuditRecord goes first inside its element, for the typed forms
//! too (ODM 1.3.2 refers to those by ID from elsewhere; this reader reads them in place).
//!
//! The property that matters: reading what [`write`] wrote gives the same form instance back
//! (positions and skipped counts aside). A form instance the reader could never have produced
//! (an empty OID, an empty key, a null item with a value...) is refused with [`WriteError`]
//! rather than written as something else.

use quick_xml::Writer;
use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::name::QName;

use crate::odm::model::{AuditRecord, FileType, FormInstance, ItemValue};
use crate::odm::xml::ODM13_NS;

/// A form instance that no ODM document read by this reader could have given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// A required OID or key is empty, or an optional one is present but empty (read as absent).
    #[error("{0} is empty")]
    Empty(&'static str),
    /// A character XML 1.0 cannot carry (a control character, U+FFFE, U+FFFF).
    #[error("{0} holds a character XML cannot carry")]
    IllegalCharacter(&'static str),
    /// A null item with a value, or a typed item with neither a value nor IsNull.
    #[error("an item's value does not agree with its IsNull and form")]
    Inconsistent,
    /// An event repeat key or TransactionType without the event.
    #[error("event details without an event")]
    EventlessDetails,
}

/// The document for `form`.
pub fn write(form: &FormInstance) -> Result<Vec<u8>, WriteError> {
    check(form)?;
    let mut w = Writer::new(Vec::with_capacity(512 + 96 * form.items.len()));
    let decl = BytesDecl::new("1.0", Some("UTF-8"), None);
    emit(&mut w, Event::Decl(decl));
    let file_type = form.file_type.map(|t| match t {
        FileType::Snapshot => "Snapshot",
        FileType::Transactional => "Transactional",
    });
    open(
        &mut w,
        "ODM",
        &[
            ("xmlns", Some(ODM13_NS)),
            ("ODMVersion", Some("1.3.2")),
            ("FileType", file_type),
            ("FileOID", form.file_oid.as_deref()),
            ("CreationDateTime", form.created.as_deref()),
            ("AsOfDateTime", form.as_of.as_deref()),
        ],
    );
    open(
        &mut w,
        "ClinicalData",
        &[
            ("StudyOID", Some(&form.study_oid)),
            ("MetaDataVersionOID", form.metadata_version_oid.as_deref()),
        ],
    );
    open(
        &mut w,
        "SubjectData",
        &[
            ("SubjectKey", Some(&form.subject_key)),
            ("TransactionType", form.subject_tx.map(|t| t.as_str())),
        ],
    );
    if let Some(site) = &form.site_oid {
        empty(&mut w, "SiteRef", &[("LocationOID", Some(site))]);
    }
    if let Some(event) = &form.event_oid {
        open(
            &mut w,
            "StudyEventData",
            &[
                ("StudyEventOID", Some(event)),
                ("StudyEventRepeatKey", form.event_repeat.as_deref()),
                ("TransactionType", form.event_tx.map(|t| t.as_str())),
            ],
        );
    }
    open(
        &mut w,
        "FormData",
        &[
            ("FormOID", Some(&form.form_oid)),
            ("FormRepeatKey", form.form_repeat.as_deref()),
            ("TransactionType", form.tx.map(|t| t.as_str())),
        ],
    );
    if let Some(audit) = &form.audit {
        write_audit(&mut w, audit);
    }
    let mut run: Option<&ItemValue> = None;
    for item in &form.items {
        let same = run.is_some_and(|r| {
            r.group_oid == item.group_oid
                && r.group_repeat == item.group_repeat
                && r.group_tx == item.group_tx
        });
        if !same {
            if run.is_some() {
                close(&mut w, "ItemGroupData");
            }
            open(
                &mut w,
                "ItemGroupData",
                &[
                    ("ItemGroupOID", Some(&item.group_oid)),
                    ("ItemGroupRepeatKey", item.group_repeat.as_deref()),
                    ("TransactionType", item.group_tx.map(|t| t.as_str())),
                ],
            );
            run = Some(item);
        }
        write_item(&mut w, item);
    }
    if run.is_some() {
        close(&mut w, "ItemGroupData");
    }
    close(&mut w, "FormData");
    if form.event_oid.is_some() {
        close(&mut w, "StudyEventData");
    }
    close(&mut w, "SubjectData");
    close(&mut w, "ClinicalData");
    close(&mut w, "ODM");
    Ok(w.into_inner())
}

fn write_item(w: &mut Writer<Vec<u8>>, item: &ItemValue) {
    let name = item.typed_as.map_or("ItemData", |t| t.element());
    let untyped_value = match item.typed_as {
        None => item.value.as_deref(),
        Some(_) => None,
    };
    let unit_as_attribute = item.typed_as.and(item.unit_oid.as_deref());
    let attrs = [
        ("ItemOID", Some(item.item_oid.as_str())),
        ("Value", untyped_value),
        ("IsNull", item.is_null.then_some("Yes")),
        ("MeasurementUnitOID", unit_as_attribute),
        ("TransactionType", item.tx.map(|t| t.as_str())),
    ];
    let unit_as_child = item.unit_oid.as_deref().filter(|_| item.typed_as.is_none());
    let text = item
        .typed_as
        .and(item.value.as_deref())
        .filter(|t| !t.is_empty());
    if item.audit.is_none() && unit_as_child.is_none() && text.is_none() {
        return empty(w, name, &attrs);
    }
    open(w, name, &attrs);
    if let Some(audit) = &item.audit {
        write_audit(w, audit);
    }
    if let Some(unit) = unit_as_child {
        empty(
            w,
            "MeasurementUnitRef",
            &[("MeasurementUnitOID", Some(unit))],
        );
    }
    if let Some(text) = text {
        emit(w, Event::Text(BytesText::from_escaped(escape_text(text))));
    }
    close(w, name);
}

fn write_audit(w: &mut Writer<Vec<u8>>, audit: &AuditRecord) {
    open(w, "AuditRecord", &[]);
    if let Some(user) = &audit.user_oid {
        empty(w, "UserRef", &[("UserOID", Some(user))]);
    }
    if let Some(location) = &audit.location_oid {
        empty(w, "LocationRef", &[("LocationOID", Some(location))]);
    }
    for (name, text) in [
        ("DateTimeStamp", &audit.date_time),
        ("ReasonForChange", &audit.reason_for_change),
        ("SourceID", &audit.source_id),
    ] {
        if let Some(text) = text {
            open(w, name, &[]);
            emit(w, Event::Text(BytesText::from_escaped(escape_text(text))));
            close(w, name);
        }
    }
    close(w, "AuditRecord");
}

/// Writing into a `Vec` cannot fail.
fn emit(w: &mut Writer<Vec<u8>>, event: Event<'_>) {
    let _ = w.write_event(event);
}

fn start<'a>(name: &'a str, attrs: &[(&'a str, Option<&str>)]) -> BytesStart<'a> {
    let mut tag = BytesStart::new(name);
    for (key, value) in attrs {
        if let Some(value) = value {
            tag.push_attribute(Attribute {
                key: QName(key),
                value: escape_attribute(value).into(),
            });
        }
    }
    tag
}

fn open(w: &mut Writer<Vec<u8>>, name: &str, attrs: &[(&str, Option<&str>)]) {
    emit(w, Event::Start(start(name, attrs)));
}

fn empty(w: &mut Writer<Vec<u8>>, name: &str, attrs: &[(&str, Option<&str>)]) {
    emit(w, Event::Empty(start(name, attrs)));
}

fn close(w: &mut Writer<Vec<u8>>, name: &str) {
    emit(w, Event::End(BytesEnd::new(name)));
}

/// An attribute value that reads back as itself: `& < "` escaped, and tab, newline and carriage
/// return as character references (attribute-value normalisation would make them spaces).
/// `>` and `'` stay as they are, so a value grows as little as it can.
fn escape_attribute(value: &str) -> String {
    let mut out = Vec::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b'\t' => out.extend_from_slice(b"&#9;"),
            b'\n' => out.extend_from_slice(b"&#10;"),
            b'\r' => out.extend_from_slice(b"&#13;"),
            b => out.push(b),
        }
    }
    // Only ASCII bytes were replaced by ASCII: still UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// Text that reads back as itself: `& < >` escaped (`>` for `]]>`), a carriage return as a
/// character reference (line-end normalisation would make it a newline).
fn escape_text(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'\r' => out.extend_from_slice(b"&#13;"),
            b => out.push(b),
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Refuses what the reader could never have produced (see [`WriteError`]).
fn check(form: &FormInstance) -> Result<(), WriteError> {
    let required = |name, value: &str| {
        if value.is_empty() {
            Err(WriteError::Empty(name))
        } else {
            legal(name, value)
        }
    };
    let optional = |name, value: &Option<String>| match value {
        Some(v) => required(name, v),
        None => Ok(()),
    };
    let audit = |audit: &Option<AuditRecord>| match audit {
        Some(a) => {
            optional("UserOID", &a.user_oid)?;
            optional("LocationOID", &a.location_oid)?;
            optional("DateTimeStamp", &a.date_time)?;
            optional("ReasonForChange", &a.reason_for_change)?;
            optional("SourceID", &a.source_id)
        }
        None => Ok(()),
    };
    optional("FileOID", &form.file_oid)?;
    optional("CreationDateTime", &form.created)?;
    optional("AsOfDateTime", &form.as_of)?;
    required("StudyOID", &form.study_oid)?;
    optional("MetaDataVersionOID", &form.metadata_version_oid)?;
    required("SubjectKey", &form.subject_key)?;
    optional("LocationOID", &form.site_oid)?;
    optional("StudyEventOID", &form.event_oid)?;
    optional("StudyEventRepeatKey", &form.event_repeat)?;
    if form.event_oid.is_none() && (form.event_repeat.is_some() || form.event_tx.is_some()) {
        return Err(WriteError::EventlessDetails);
    }
    required("FormOID", &form.form_oid)?;
    optional("FormRepeatKey", &form.form_repeat)?;
    audit(&form.audit)?;
    for item in &form.items {
        legal("ItemGroupOID", &item.group_oid)?;
        optional("ItemGroupRepeatKey", &item.group_repeat)?;
        required("ItemOID", &item.item_oid)?;
        optional("MeasurementUnitOID", &item.unit_oid)?;
        if let Some(value) = &item.value {
            legal("Value", value)?;
        }
        let binary = item.typed_as.is_some_and(|t| t.is_binary());
        let typed_without_value = item.typed_as.is_some() && item.value.is_none();
        if binary
            || (item.is_null && item.value.is_some())
            || (typed_without_value && !item.is_null)
        {
            return Err(WriteError::Inconsistent);
        }
        audit(&item.audit)?;
    }
    Ok(())
}

fn legal(name: &'static str, value: &str) -> Result<(), WriteError> {
    let ok = value.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    });
    if ok {
        Ok(())
    } else {
        Err(WriteError::IllegalCharacter(name))
    }
}

#[cfg(test)]
mod tests;
