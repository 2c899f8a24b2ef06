//! The metadata reader: an ODM document's study definitions (Study > GlobalVariables,
//! BasicDefinitions, MetaDataVersion) and AdminData, in plain Rust types, for `study from-odm`.
//!
//! It reads with the same hardened reader as the ClinicalData reader ([`crate::odm::xml`]), so the
//! same caps and refusals apply; ClinicalData and ReferenceData are read past (checked, not kept).
//! Unlike clinical data, metadata is kept whole in memory: it is small (the largest real export
//! seen holds 311 items), and what it may hold is bounded by [`MAX_METADATA_BYTES`], counted while
//! reading, so a hostile document cannot make it grow past that.
//!
//! Everything is kept as the file writes it (after XML processing): OIDs untrimmed, attribute
//! values as strings (`Length="abc"` is the converter's to judge), texts with their languages.
//! What the model has no place for is counted: documentation elements by name
//! ([`Metadata::documentation`]), vendor extensions by namespace ([`Metadata::skipped`]). The
//! vendor attributes of the elements kept (`redcap:Identifier` on an ItemDef) are kept with them.
//!
//! Users of AdminData are kept by OID only: their names, addresses and phones are never read into
//! memory.

mod defs;
mod read;
#[cfg(test)]
mod tests;
mod text;

use std::collections::BTreeMap;

use crate::odm::model::{Position, Skipped};
use crate::odm::xml::FileError;
pub use read::read;
pub use text::Text;

/// The most bytes the metadata kept may take in memory (strings, plus a fixed cost per element
/// kept): 64 MiB, some 20 times the largest real export seen in full (data included).
pub const MAX_METADATA_BYTES: usize = 64 * 1024 * 1024;

/// Why the metadata of a document cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The document is refused (the XML reader's reasons, the ODM 2.0 structure, a bad FileType).
    #[error(transparent)]
    File(#[from] FileError),
    /// The metadata would take more than [`MAX_METADATA_BYTES`].
    #[error(
        "{at}: the metadata holds more than {cap} bytes: not a study definition edc-ingest can convert"
    )]
    TooLarge { cap: usize, at: Position },
}

/// The metadata of one document.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    pub studies: Vec<Study>,
    pub admin: Vec<AdminData>,
    /// ClinicalData and ReferenceData blocks read past.
    pub clinical_data: u64,
    pub reference_data: u64,
    /// ODM elements of the metadata without a place in a protocol (Alias, Description,
    /// Presentation, ...), by name; `(other)` for a name ODM 1.3 does not define.
    pub documentation: BTreeMap<&'static str, u64>,
    /// Vendor extension elements and attributes read past, by namespace (those kept on the
    /// elements read are not counted here).
    pub skipped: Skipped,
}

/// One `Study`.
#[derive(Clone, Debug, Default)]
pub struct Study {
    pub oid: String,
    /// `GlobalVariables/StudyName` and `ProtocolName`.
    pub name: Option<String>,
    pub protocol_name: Option<String>,
    /// `BasicDefinitions/MeasurementUnit`.
    pub units: Vec<MeasurementUnit>,
    pub versions: Vec<MetaDataVersion>,
    pub at: Position,
}

#[derive(Clone, Debug, Default)]
pub struct MeasurementUnit {
    pub oid: String,
    pub name: Option<String>,
    pub symbol: Text,
}

/// A vendor attribute: namespace URI, local name, value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VendorAttr {
    pub ns: String,
    pub local: String,
    pub value: String,
}

/// One `MetaDataVersion`, its definitions in document order.
#[derive(Clone, Debug, Default)]
pub struct MetaDataVersion {
    pub oid: String,
    pub name: Option<String>,
    /// `Include`: the definitions of another study's metadata version are part of this one.
    pub includes: Vec<Include>,
    /// `Protocol/StudyEventRef`, in document order.
    pub protocol: Vec<Ref>,
    pub events: Vec<EventDef>,
    pub forms: Vec<FormDef>,
    pub groups: Vec<GroupDef>,
    pub items: Vec<ItemDef>,
    pub code_lists: Vec<CodeList>,
    pub conditions: Vec<Named>,
    pub methods: Vec<Named>,
    /// Vendor attributes on the MetaDataVersion element (`redcap:RecordIdField`).
    pub vendor: Vec<VendorAttr>,
    pub at: Position,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Include {
    pub study_oid: String,
    pub metadata_version_oid: String,
}

/// A reference from one definition to another (StudyEventRef, FormRef, ItemGroupRef, ItemRef).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ref {
    pub oid: String,
    /// `Mandatory="Yes"`.
    pub mandatory: bool,
    pub order: Option<String>,
    /// `CollectionExceptionConditionOID`.
    pub condition: Option<String>,
    /// `MethodOID` (ItemRef), or the older `ImputationMethodOID`.
    pub method: Option<String>,
    pub at: Position,
}

/// A ConditionDef or MethodDef: what the protocol cannot hold, kept to be named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Named {
    pub oid: String,
    pub name: Option<String>,
    pub at: Position,
}

#[derive(Clone, Debug, Default)]
pub struct EventDef {
    pub oid: String,
    pub name: Option<String>,
    pub repeating: Option<String>,
    /// `Type`: Scheduled, Unscheduled, Common.
    pub kind: Option<String>,
    pub forms: Vec<Ref>,
    pub at: Position,
}

#[derive(Clone, Debug, Default)]
pub struct FormDef {
    pub oid: String,
    pub name: Option<String>,
    pub repeating: Option<String>,
    pub groups: Vec<Ref>,
    pub at: Position,
}

#[derive(Clone, Debug, Default)]
pub struct GroupDef {
    pub oid: String,
    pub name: Option<String>,
    /// `Repeating` as written (`Yes`, `No`).
    pub repeating: Option<String>,
    pub items: Vec<Ref>,
    pub at: Position,
}

#[derive(Clone, Debug, Default)]
pub struct ItemDef {
    pub oid: String,
    pub name: Option<String>,
    pub data_type: Option<String>,
    pub length: Option<String>,
    pub significant_digits: Option<String>,
    pub question: Text,
    pub code_list: Option<String>,
    /// `MeasurementUnitRef/@MeasurementUnitOID`, in order.
    pub units: Vec<String>,
    pub range_checks: Vec<RangeCheck>,
    /// Vendor attributes on the ItemDef (`redcap:Identifier`, `redcap:FieldType`, ...).
    pub vendor: Vec<VendorAttr>,
    /// The forms where an OpenClinica item detail flags the item as PHI (`PHI="Yes"` on
    /// `OpenClinica:ItemPresentInForm`), or `*` when a vendor attribute `PHI` says so.
    pub vendor_phi: Vec<String>,
    pub at: Position,
}

impl ItemDef {
    /// The value of the vendor attribute `local` of a namespace whose URI contains `ns_part`.
    pub fn vendor_attr(&self, ns_part: &str, local: &str) -> Option<&str> {
        self.vendor
            .iter()
            .find(|a| a.local == local && a.ns.contains(ns_part))
            .map(|a| a.value.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeCheck {
    pub comparator: Option<String>,
    pub soft_hard: Option<String>,
    pub values: Vec<String>,
    /// A `FormalExpression` stands in for (or beside) the CheckValues.
    pub formal_expression: bool,
    pub unit: Option<String>,
    pub message: Text,
    pub at: Position,
}

#[derive(Clone, Debug, Default)]
pub struct CodeList {
    pub oid: String,
    pub name: Option<String>,
    pub data_type: Option<String>,
    pub items: Vec<CodeListItem>,
    /// `ExternalCodeList`: `Dictionary` (MedDRA, ...), its codes are not in the file.
    pub external: Option<String>,
    pub at: Position,
}

#[derive(Clone, Debug, Default)]
pub struct CodeListItem {
    pub code: String,
    /// `Decode` of a CodeListItem; empty for an EnumeratedItem.
    pub decode: Text,
}

/// One `AdminData` block.
#[derive(Clone, Debug, Default)]
pub struct AdminData {
    pub study_oid: Option<String>,
    /// User OIDs (nothing else of a user is read).
    pub users: Vec<String>,
    pub locations: Vec<Location>,
    pub signature_defs: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Location {
    pub oid: String,
    pub name: Option<String>,
    /// `LocationType`: Sponsor, Site, Lab, Other.
    pub kind: Option<String>,
    pub at: Position,
}
