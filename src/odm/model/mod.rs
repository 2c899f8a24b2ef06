//! What the rest of the code sees of ODM clinical data: one form instance (a FormData with the
//! context around it) at a time, in plain Rust types. No XML type leaks out of `odm`.
//!
//! Strings are as the file gives them after XML processing (entities resolved, attribute values
//! normalised); nothing is trimmed, and an empty key or reference attribute (`FormRepeatKey=""`,
//! `LocationOID=""`) is `None`, because vendors write empty where they mean absent. The `Debug`
//! of these types shows the structure and hides what may identify a patient (subject keys, values,
//! reasons for change, source ids); still, never log them: print OIDs through
//! [`crate::printable::Printable`].

use std::collections::BTreeMap;
use std::fmt;

mod typed;

pub use typed::TypedAs;

/// Where something starts in the document: 1-based line (counted at `\n`) and column (in
/// characters, after an ISO-8859-1 input was transcoded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// The ODM root's `FileType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileType {
    /// At most one state per data point, usually without TransactionType.
    Snapshot,
    /// Changes, each with its TransactionType.
    Transactional,
}

/// ODM's `TransactionType`, on SubjectData, StudyEventData, FormData, ItemGroupData and ItemData.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransactionType {
    Insert,
    Update,
    Remove,
    Upsert,
    Context,
}

impl TransactionType {
    /// The attribute value (ODM spells them exactly so).
    pub fn parse(value: &str) -> Option<TransactionType> {
        Some(match value {
            "Insert" => TransactionType::Insert,
            "Update" => TransactionType::Update,
            "Remove" => TransactionType::Remove,
            "Upsert" => TransactionType::Upsert,
            "Context" => TransactionType::Context,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TransactionType::Insert => "Insert",
            TransactionType::Update => "Update",
            TransactionType::Remove => "Remove",
            TransactionType::Upsert => "Upsert",
            TransactionType::Context => "Context",
        }
    }
}

/// An ODM AuditRecord: who, where, when and why a change was made.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// `UserRef/@UserOID`.
    pub user_oid: Option<String>,
    /// `LocationRef/@LocationOID`.
    pub location_oid: Option<String>,
    /// `DateTimeStamp` as written (ODM: ISO 8601 date-time; old exports write malformed ones).
    pub date_time: Option<String>,
    /// `ReasonForChange`: free text, so treated as protected (it may name a patient).
    pub reason_for_change: Option<String>,
    /// `SourceID`: free text, protected likewise.
    pub source_id: Option<String>,
}

impl fmt::Debug for AuditRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditRecord")
            .field("user_oid", &self.user_oid)
            .field("location_oid", &self.location_oid)
            .field("date_time", &self.date_time)
            .field("reason_for_change", &redacted(&self.reason_for_change))
            .field("source_id", &redacted(&self.source_id))
            .finish()
    }
}

/// One item value of a form instance, with the item group around it.
#[derive(Clone, PartialEq, Eq)]
pub struct ItemValue {
    /// `ItemGroupData/@ItemGroupOID`; empty when the file gives none (REDCap leaves it empty when
    /// the first field of a section is blank: the items are still the form's).
    pub group_oid: String,
    /// `ItemGroupRepeatKey` as given; None when absent or empty. Which groups repeat is the
    /// protocol's to say: data alone cannot tell.
    pub group_repeat: Option<String>,
    /// The ItemGroupData's TransactionType.
    pub group_tx: Option<TransactionType>,
    /// `ItemOID`.
    pub item_oid: String,
    /// The value: `Value="..."`, the text of a typed form (`<ItemDataInteger>12<`), or a `<Value>`
    /// child (the ODM 2.0 shape some "1.3.2" files use). None when `IsNull="Yes"` or when an
    /// `ItemData` has no Value; a typed form's value is None only with `IsNull="Yes"`.
    pub value: Option<String>,
    /// `IsNull="Yes"`: the item was deliberately left empty (then `value` is None).
    pub is_null: bool,
    /// The measurement unit the value is stated in: `MeasurementUnitRef/@MeasurementUnitOID`, or a
    /// typed form's `MeasurementUnitOID`.
    pub unit_oid: Option<String>,
    /// The ItemData's TransactionType.
    pub tx: Option<TransactionType>,
    /// Which 1.3 typed form carried the value; None for `ItemData`.
    pub typed_as: Option<TypedAs>,
    /// The item's own AuditRecord, else its item group's; None when neither has one (then the
    /// form's [`FormInstance::audit`] applies).
    pub audit: Option<AuditRecord>,
    /// The start of the item's element.
    pub at: Position,
}

impl fmt::Debug for ItemValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemValue")
            .field("group_oid", &self.group_oid)
            .field("group_repeat", &self.group_repeat)
            .field("group_tx", &self.group_tx)
            .field("item_oid", &self.item_oid)
            .field("value", &redacted(&self.value))
            .field("is_null", &self.is_null)
            .field("unit_oid", &self.unit_oid)
            .field("tx", &self.tx)
            .field("typed_as", &self.typed_as)
            .field("audit", &self.audit)
            .field("at", &self.at)
            .finish()
    }
}

/// One FormData with its context: the unit that becomes one record.
#[derive(Clone, PartialEq, Eq)]
pub struct FormInstance {
    /// The ODM root's `FileOID`, `FileType`, `CreationDateTime` and `AsOfDateTime`.
    pub file_oid: Option<String>,
    pub file_type: Option<FileType>,
    pub created: Option<String>,
    pub as_of: Option<String>,
    /// `ClinicalData/@StudyOID`.
    pub study_oid: String,
    /// `ClinicalData/@MetaDataVersionOID`; None when absent (some exports leave it out, though
    /// ODM requires it).
    pub metadata_version_oid: Option<String>,
    /// `SubjectData/@SubjectKey`: may be a direct identifier (see the study's `odm.subject_key`).
    pub subject_key: String,
    pub subject_tx: Option<TransactionType>,
    /// `SiteRef/@LocationOID` of the subject.
    pub site_oid: Option<String>,
    /// `StudyEventData/@StudyEventOID`; None for a FormData directly under SubjectData (a
    /// classic single-event export).
    pub event_oid: Option<String>,
    pub event_repeat: Option<String>,
    pub event_tx: Option<TransactionType>,
    /// `FormData/@FormOID`, `@FormRepeatKey` and its TransactionType.
    pub form_oid: String,
    pub form_repeat: Option<String>,
    pub tx: Option<TransactionType>,
    /// The nearest AuditRecord: the form's, else its study event's, else its subject's.
    pub audit: Option<AuditRecord>,
    /// The values, in document order.
    pub items: Vec<ItemValue>,
    /// The start of the FormData element.
    pub at: Position,
    /// What was read past inside this FormData (and on its own element).
    pub skipped: Skipped,
}

impl fmt::Debug for FormInstance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FormInstance")
            .field("file_oid", &self.file_oid)
            .field("file_type", &self.file_type)
            .field("created", &self.created)
            .field("as_of", &self.as_of)
            .field("study_oid", &self.study_oid)
            .field("metadata_version_oid", &self.metadata_version_oid)
            .field("subject_key", &"<redacted>")
            .field("subject_tx", &self.subject_tx)
            .field("site_oid", &self.site_oid)
            .field("event_oid", &self.event_oid)
            .field("event_repeat", &self.event_repeat)
            .field("event_tx", &self.event_tx)
            .field("form_oid", &self.form_oid)
            .field("form_repeat", &self.form_repeat)
            .field("tx", &self.tx)
            .field("audit", &self.audit)
            .field("items", &self.items)
            .field("at", &self.at)
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// At most this many namespaces are counted each; the others add up under [`OTHER_NAMESPACES`].
pub const MAX_NAMESPACES: usize = 32;
/// The key the namespaces past [`MAX_NAMESPACES`] are counted under.
pub const OTHER_NAMESPACES: &str = "(other namespaces)";

/// What was read past without being used, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Elements of other namespaces (vendor extensions: `redcap:`, `OpenClinica:`, `mdsol:`), each
    /// with its whole subtree, by namespace URI (as written in the file: print it through
    /// [`crate::printable::Printable`]).
    pub extension_elements: BTreeMap<String, u64>,
    /// Attributes of other namespaces on the elements read, by namespace URI.
    pub extension_attributes: BTreeMap<String, u64>,
    /// ODM elements not used here, with their subtrees, by name (`Annotation`, `Signature`, ...;
    /// any name ODM 1.3 does not define under `(other)`).
    pub odm_elements: BTreeMap<&'static str, u64>,
}

impl Skipped {
    pub fn is_empty(&self) -> bool {
        self.extension_elements.is_empty()
            && self.extension_attributes.is_empty()
            && self.odm_elements.is_empty()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Skipped) {
        for (ns, n) in &other.extension_elements {
            count_ns(&mut self.extension_elements, ns, *n);
        }
        for (ns, n) in &other.extension_attributes {
            count_ns(&mut self.extension_attributes, ns, *n);
        }
        for (name, n) in &other.odm_elements {
            *self.odm_elements.entry(name).or_default() += n;
        }
    }
}

/// The longest namespace kept as a key, in bytes; a longer one is cut (at a character boundary).
pub const MAX_NAMESPACE_BYTES: usize = 256;

/// Adds `n` under `ns` (cut to [`MAX_NAMESPACE_BYTES`]), or under [`OTHER_NAMESPACES`] once
/// [`MAX_NAMESPACES`] are counted: the counts stay small whatever a document declares.
pub(crate) fn count_ns(map: &mut BTreeMap<String, u64>, ns: &str, n: u64) {
    let mut end = ns.len().min(MAX_NAMESPACE_BYTES);
    while !ns.is_char_boundary(end) {
        end -= 1;
    }
    let ns = &ns[..end];
    if let Some(count) = map.get_mut(ns) {
        *count += n;
    } else if map.len() < MAX_NAMESPACES {
        map.insert(ns.to_string(), n);
    } else {
        *map.entry(OTHER_NAMESPACES.to_string()).or_default() += n;
    }
}

/// `Some("<redacted>")` for a present value, so `Debug` tells presence without the content.
fn redacted(value: &Option<String>) -> Option<&'static str> {
    value.as_ref().map(|_| "<redacted>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_values_keys_and_free_text() {
        let item = ItemValue {
            group_oid: "IG.1".into(),
            group_repeat: None,
            group_tx: None,
            item_oid: "I.NAME".into(),
            value: Some("Jane Roe".into()),
            is_null: false,
            unit_oid: None,
            tx: None,
            typed_as: None,
            audit: Some(AuditRecord {
                reason_for_change: Some("typo in Jane's record".into()),
                source_id: Some("chart of Jane".into()),
                ..AuditRecord::default()
            }),
            at: Position::default(),
        };
        let shown = format!("{item:?}");
        assert!(
            shown.contains("I.NAME") && !shown.contains("Jane"),
            "{shown}"
        );
    }

    #[test]
    fn namespaces_counted_are_bounded() {
        let mut map = BTreeMap::new();
        for i in 0..MAX_NAMESPACES + 10 {
            count_ns(&mut map, &format!("urn:x:{i}"), 1);
        }
        count_ns(&mut map, "urn:x:0", 1);
        assert_eq!(map.len(), MAX_NAMESPACES + 1);
        assert_eq!(map[OTHER_NAMESPACES], 10);
        assert_eq!(map["urn:x:0"], 2);
        let mut map = BTreeMap::new();
        count_ns(&mut map, &"é".repeat(1000), 1);
        let key = map.keys().next().unwrap();
        assert!(key.len() <= MAX_NAMESPACE_BYTES && key.chars().all(|c| c == 'é'));
    }
}
