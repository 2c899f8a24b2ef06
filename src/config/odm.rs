//! The `odm` section: the caps of the hardened XML reader that every CDISC ODM path uses (the
//! daemon's ODM messages, `odm import`, `study from-odm`). They bound what one document can make
//! the reader hold, whatever its size; see `src/odm/xml` for how each is enforced while reading.

use serde::Deserialize;

use super::ConfigError;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OdmSettings {
    /// The largest single piece of XML, in bytes (UTF-8): a start tag with its attributes, an end
    /// tag, a run of text, a CDATA section, a comment, a processing instruction. A larger one
    /// refuses the whole document, after reading about this many bytes of it.
    pub max_event_bytes: usize,
    /// The deepest nesting of elements (the root is depth 1).
    pub max_depth: usize,
    /// The most attributes on one element, namespace declarations included.
    pub max_attributes: usize,
    /// The most item values in one form instance (FormData); a larger form is refused on its own.
    pub max_form_items: usize,
}

impl Default for OdmSettings {
    /// The values of `config/default.yaml`.
    fn default() -> Self {
        OdmSettings {
            max_event_bytes: 1024 * 1024,
            max_depth: 64,
            max_attributes: 256,
            max_form_items: 20_000,
        }
    }
}

impl OdmSettings {
    /// The ranges: each cap at least what a real ODM document needs, and at most what keeps one
    /// document's memory small.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |key: &str, value: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::Invalid(format!(
                    "odm.{key} ({value}) must be between {lo} and {hi}"
                )))
            }
        };
        range(
            "max_event_bytes",
            self.max_event_bytes,
            1024,
            256 * 1024 * 1024,
        )?;
        range("max_depth", self.max_depth, 16, 1024)?;
        range("max_attributes", self.max_attributes, 16, 65_536)?;
        range("max_form_items", self.max_form_items, 1, 10_000_000)
    }
}
