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
    /// The most bytes one form instance's values (with their OIDs, keys and AuditRecords) may
    /// hold in memory; a larger form is refused on its own.
    pub max_form_bytes: usize,
}

impl Default for OdmSettings {
    /// The values of `config/default.yaml`.
    fn default() -> Self {
        OdmSettings {
            max_event_bytes: 1024 * 1024,
            max_depth: 64,
            max_attributes: 256,
            max_form_items: 20_000,
            max_form_bytes: 16 * 1024 * 1024,
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
        range("max_form_items", self.max_form_items, 1, 10_000_000)?;
        range(
            "max_form_bytes",
            self.max_form_bytes,
            1024,
            1024 * 1024 * 1024,
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut env = vec![(
            "EDC__DEV_INSECURE_PSEUDONYM_KEY".to_string(),
            "true".to_string(),
        )];
        env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Settings::load_with_env(None, env)
    }

    #[test]
    fn the_default_file_and_the_default_agree_and_caps_are_checked() {
        assert_eq!(load(&[]).unwrap().odm, OdmSettings::default());
        let s = load(&[("EDC__ODM__MAX_DEPTH", "16")]).unwrap();
        assert_eq!(s.odm.max_depth, 16);
        let e = load(&[("EDC__ODM__MAX_DEPTH", "15")]).unwrap_err();
        assert!(e.to_string().contains("odm.max_depth (15)"), "{e}");
        assert!(load(&[("EDC__ODM__MAX_EVENT_BYTES", "1023")]).is_err());
        assert!(load(&[("EDC__ODM__MAX_FORM_ITEMS", "0")]).is_err());
        assert!(load(&[("EDC__ODM__MAX_ATTRIBUTES", "15")]).is_err());
        assert!(load(&[("EDC__ODM__MAX_FORM_BYTES", "1023")]).is_err());
    }
}
