//! A protocol file as written: the YAML schema as types, for reading (unknown keys are refused) and
//! for writing one (a converter such as `study from-odm` builds a [`ProtocolFile`] and prints it
//! with `serde_saphyr::to_string`). [`crate::protocol::Protocol::from_file`] checks and compiles it.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{Item, OdmSettings, WhenMissing};

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProtocolFile {
    pub study: String,
    pub version: String,
    /// First day this version is in force (by the record's `captured_at`); absent means "always".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_from: Option<NaiveDate>,
    /// Last day this version is in force; absent means "until a later version takes over".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_to: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// How ODM documents of the study are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odm: Option<OdmSettings>,
    pub sites: Vec<String>,
    pub visits: Vec<String>,
    pub forms: BTreeMap<String, FormFile>,
    /// Conditions that raise an `alert.raised` event (a serious adverse event, a hypertensive crisis).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertFile>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FormFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The form's own items, and those of its non-repeating groups.
    #[serde(default)]
    pub items: BTreeMap<String, Item>,
    /// Repeating groups: each holds rows of its own items.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckFile>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub items: BTreeMap<String, Item>,
    /// Run once per row, over the row's items and the form's items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckFile>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CheckFile {
    pub id: String,
    pub assert: String,
    pub message: String,
    /// A failing check refuses the record as `invalid` instead of raising a data query.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hard: bool,
    #[serde(default, skip_serializing_if = "is_skip")]
    pub when_missing: WhenMissing,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AlertFile {
    pub id: String,
    pub when: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_skip(w: &WhenMissing) -> bool {
    *w == WhenMissing::Skip
}
