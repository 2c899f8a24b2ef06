//! Study protocols: what a site may submit for a study, and the edit checks its data must pass.
//!
//! Data managers write one YAML file per protocol version in `studies_dir` ([`file`] is its schema,
//! as types). [`Registry::load`] reads them all, compiles every CEL expression once, and refuses
//! the whole set if any file is wrong, so a broken protocol can never be half in force. What each
//! item type accepts and the canonical form of each value live in [`value`]; validating a record
//! against a protocol lives in `pipeline::validate`. This module only knows the model.
//!
//! # Names
//! Forms, groups and items keep the names the protocol gives them (ODM OIDs such as `IT.VS.1` or
//! `SE VISIT 1` included). Item and group names share one namespace per form. CEL sees each item
//! under its CEL name ([`cel_name`]): every character outside `[A-Za-z0-9_]` becomes `_`, a name
//! starting with a digit gets a leading `_`, a CEL reserved word a trailing `_`; a name that is
//! already a CEL identifier is its own CEL name. Two items of a form with the same CEL name are
//! refused, as is an item whose CEL name is one of the context variables.

pub mod codes;
mod compile;
pub mod file;
mod lint;
mod names;
mod registry;
#[cfg(test)]
mod tests;
pub mod value;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub use codes::Codes;
pub use compile::compile_expression;
pub use names::{RESERVED_WORDS, cel_name};
pub use registry::Registry;
use value::Span;

/// Variables an expression may use besides the form's items.
pub const CONTEXT_VARIABLES: [&str; 4] = ["study", "site", "visit", "form"];

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ItemType {
    Integer,
    Decimal,
    #[default]
    Text,
    Date,
    Code,
    Boolean,
    Time,
    Datetime,
    PartialDate,
    PartialTime,
    PartialDatetime,
    /// Binary content (ODM base64/hex types): never stored; any value refuses the record.
    Binary,
}

impl ItemType {
    pub fn is_numeric(self) -> bool {
        matches!(self, ItemType::Integer | ItemType::Decimal)
    }

    /// `partial_date`, `partial_time` or `partial_datetime`: a value may be truncated.
    pub fn is_partial(self) -> bool {
        matches!(
            self,
            ItemType::PartialDate | ItemType::PartialTime | ItemType::PartialDatetime
        )
    }
}

/// What the codes of a `code` item are (an ODM CodeList's DataType): it fixes their canonical form.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CodeType {
    Integer,
    Decimal,
    #[default]
    Text,
}

impl CodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            CodeType::Integer => "integer",
            CodeType::Decimal => "decimal",
            CodeType::Text => "text",
        }
    }
}

/// One item (field) of a form or of a group's rows, as the protocol defines it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Item {
    #[serde(rename = "type")]
    pub kind: ItemType,
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// Inclusive [low, high] for integer and decimal items; outside it raises a query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f64; 2]>,
    /// Inclusive [low, high] for integer and decimal items; outside it refuses the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_range: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The units a source may state for a value (ODM MeasurementUnitRef); see [`Item::accepts_unit`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Vec<String>>,
    /// Allowed values of a code item, a list or a map code -> label; another value raises a query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codes: Option<Codes>,
    /// The type of a code item's codes (default `text`): fixes their canonical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_type: Option<CodeType>,
    /// Longest allowed text, in characters; longer raises a query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Most significant digits of an integer or decimal (ODM Length); more raises a query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<u32>,
    /// Most digits after the point of a decimal (ODM SignificantDigits); more raises a query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction_digits: Option<u32>,
    /// Protected health information: stored only as a keyed pseudonym.
    #[serde(default, skip_serializing_if = "is_false")]
    pub phi: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The question the form asks (ODM Question).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Item {
    /// Whether a value may come with `unit` (as an ODM ItemData's MeasurementUnitOID says): one of
    /// `units` if the item lists them, else `unit` if it names one; an item that names no unit at
    /// all accepts any.
    pub fn accepts_unit(&self, unit: &str) -> bool {
        match (&self.units, &self.unit) {
            (Some(units), _) => units.iter().any(|u| u == unit),
            (None, Some(u)) => u == unit,
            (None, None) => true,
        }
    }
}

/// What a check does when an item it reads has no value.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WhenMissing {
    /// Not applicable: the check is not run (a required item that is missing has its own query).
    #[default]
    Skip,
    /// A data query saying the check could not be evaluated, naming the missing item.
    Query,
}

/// An edit check, compiled.
pub struct Check {
    pub id: String,
    pub message: String,
    pub source: String,
    pub program: cel::Program,
    /// The items the expression reads (their names, sorted).
    pub items: Vec<String>,
    /// A failing check refuses the record (`invalid`) instead of raising a query.
    pub hard: bool,
    pub when_missing: WhenMissing,
    /// The dates and times the expression writes as literals (`'2024-03-10'`): a partial value
    /// whose span holds one of them cannot decide the check.
    pub literals: Vec<Span>,
}

/// A repeating item group: a record holds any number of rows of its items.
pub struct Group {
    pub label: Option<String>,
    pub items: BTreeMap<String, Item>,
    /// Run once per row, over the row's items and the form's items.
    pub checks: Vec<Check>,
}

pub struct Form {
    /// The form's own items (and those of its non-repeating groups).
    pub items: BTreeMap<String, Item>,
    /// Its repeating groups.
    pub groups: BTreeMap<String, Group>,
    pub checks: Vec<Check>,
    /// Item name -> CEL name, for the form's items and its groups' items.
    cel_names: BTreeMap<String, String>,
    /// CEL name -> item name (the reverse of `cel_names`).
    by_cel: HashMap<String, String>,
    /// Whether any item of the form or of its groups is a partial date, time or date-time.
    has_partial: bool,
}

impl Form {
    /// The CEL name of an item of the form or of one of its groups.
    pub fn cel_name(&self, item: &str) -> Option<&str> {
        self.cel_names.get(item).map(String::as_str)
    }

    /// Whether any item of the form or of its groups is a partial date, time or date-time.
    pub fn has_partial_items(&self) -> bool {
        self.has_partial
    }

    /// The item of the form or of one of its groups that CEL reads under `cel`.
    pub fn item_of_cel(&self, cel: &str) -> Option<&str> {
        self.by_cel.get(cel).map(String::as_str)
    }

    /// Every item with its group (`None` for the form's own) and its CEL name, in order.
    pub fn cel_mapping(&self) -> Vec<(Option<&str>, &str, &str)> {
        let own = self.items.keys().map(|n| (None, n.as_str()));
        let grouped = self.groups.iter().flat_map(|(g, grp)| {
            grp.items
                .keys()
                .map(move |n| (Some(g.as_str()), n.as_str()))
        });
        own.chain(grouped)
            .map(|(g, n)| (g, n, self.cel_name(n).unwrap_or(n)))
            .collect()
    }

    /// The definition of an item of the form or of one of its groups, with the group's name.
    pub fn item(&self, name: &str) -> Option<(Option<&str>, &Item)> {
        if let Some(def) = self.items.get(name) {
            return Some((None, def));
        }
        self.groups
            .iter()
            .find_map(|(g, grp)| grp.items.get(name).map(|d| (Some(g.as_str()), d)))
    }
}

/// An alert, compiled.
pub struct Alert {
    pub id: String,
    pub source: String,
    pub program: cel::Program,
    /// The CEL names it reads.
    pub reads: Vec<String>,
}

/// Whether an ODM SubjectKey is a direct identifier.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKey {
    #[default]
    Keep,
    Pseudonymise,
}

/// How ODM documents of the study are read (the `odm:` section).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OdmSettings {
    #[serde(default)]
    pub subject_key: SubjectKey,
    /// The site of a form instance whose document names none (one of `sites`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_site: Option<String>,
    /// The visit of a form instance whose document names no study event (one of `visits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_visit: Option<String>,
}

/// One version of one study's protocol, ready to validate against.
pub struct Protocol {
    pub study: String,
    pub version: String,
    pub effective_from: Option<NaiveDate>,
    pub effective_to: Option<NaiveDate>,
    pub sites: HashSet<String>,
    pub visits: HashSet<String>,
    pub forms: BTreeMap<String, Form>,
    pub alerts: Vec<Alert>,
    pub odm: OdmSettings,
}

impl Protocol {
    /// Whether this version is in force on `day`.
    pub fn in_force_on(&self, day: NaiveDate) -> bool {
        self.effective_from.is_none_or(|from| from <= day)
            && self.effective_to.is_none_or(|to| day <= to)
    }
}

/// CEL name -> item name over a set of items (what an expression may read).
pub(crate) type Scope = HashMap<String, String>;
