//! The pseudonymisation key: where it comes from, how it is checked, and what it makes.
//!
//! A pseudonym is `HMAC-SHA256(key, field || 0x1f || normalised value)`. The key is the one secret
//! that protects every pseudonym, so:
//! - a key file must be a regular file (not a symbolic link), owned by the daemon's user and
//!   readable by it alone (mode 0400 or 0600), checked on the opened descriptor: one readable or
//!   writable by group or others is refused, as is one larger than [`MAX_KEY_FILE_BYTES`];
//! - a key file of text (printable ASCII, such as base64) is trimmed of surrounding whitespace; any
//!   other file is a binary key, used byte for byte;
//! - the key and the HMAC state made from it are wiped from memory when dropped;
//! - the key has an id, `HMAC-SHA256(key, "edc-ingest key id v1")` cut to 16 hex digits, stored with
//!   every record's pseudonyms: it names the key without revealing it, so a rotation shows in the
//!   data (see README, "Rotating the key").

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

pub use super::identifier::{Identifier, Unusable, normalise};
use crate::config::Settings;
use crate::failure::Failure;

/// The built-in key of `dev_insecure_pseudonym_key`. Public, so it protects nothing.
const DEV_KEY: &[u8] = b"edc-ingest insecure development key: never use with real patients";

/// The largest key file read.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Holds the pseudonymisation key (as an HMAC state, wiped on drop). `Debug` does not show it.
#[derive(Clone)]
pub struct Pseudonymizer {
    mac: Hmac<Sha256>,
    key_id: String,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pseudonymizer(key id {}, key redacted)", self.key_id)
    }
}

impl Pseudonymizer {
    pub const MIN_KEY_BYTES: usize = 32;

    pub fn new(key: &[u8]) -> Result<Self, String> {
        if key.len() < Self::MIN_KEY_BYTES {
            return Err(format!(
                "the pseudonymisation key has {} bytes; at least {} are needed",
                key.len(),
                Self::MIN_KEY_BYTES
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
        let mut id = mac.clone();
        id.update(b"edc-ingest key id v1");
        let key_id = super::hex(&id.finalize().into_bytes()[..8]);
        Ok(Pseudonymizer { mac, key_id })
    }

    pub fn insecure_dev() -> Self {
        Self::new(DEV_KEY).expect("the dev key is long enough")
    }

    /// A key for another purpose, derived from this one (`HMAC(key, label)`): the seal of our own
    /// headers, say. It reveals nothing of the pseudonymisation key.
    pub fn derive(&self, label: &str) -> Zeroizing<Vec<u8>> {
        let mut mac = self.mac.clone();
        mac.update(b"edc-ingest derived key v1 ");
        mac.update(label.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().to_vec())
    }

    /// Names the key without revealing it; stored with every record's pseudonyms.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Reads a key file (see the module's text for what is refused and what is trimmed), checked
    /// on the opened descriptor ([`crate::config::read_private_file`]).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let raw = crate::config::read_private_file(path, MAX_KEY_FILE_BYTES)
            .map_err(|e| format!("pseudonym_key_file {e}"))?;
        Self::new(key_bytes(&raw))
            .map_err(|e| format!("pseudonym_key_file {}: {e}", path.display()))
    }

    /// The key the settings give: `pseudonym_key`, else `pseudonym_key_file`, else the public
    /// development key if `dev_insecure_pseudonym_key` allows it (with a warning). None of them is
    /// the operator's to fix.
    pub fn from_settings(settings: &Settings) -> Result<Self, Failure> {
        if let Some(key) = &settings.pseudonym_key {
            return Pseudonymizer::new(key.expose().as_bytes())
                .map_err(|e| Failure::setup(format!("pseudonym_key: {e}")));
        }
        if let Some(path) = &settings.pseudonym_key_file {
            return Pseudonymizer::from_file(path).map_err(Failure::Setup);
        }
        if settings.dev_insecure_pseudonym_key {
            tracing::warn!(
                "using the built-in INSECURE development pseudonymisation key: pseudonyms protect nothing"
            );
            return Ok(Pseudonymizer::insecure_dev());
        }
        Err(Failure::setup(
            "no pseudonymisation key: set pseudonym_key_file (or EDC__PSEUDONYM_KEY_FILE) to a file \
             holding at least 32 bytes; for a local demo only, dev_insecure_pseudonym_key: true",
        ))
    }

    /// The pseudonym of `value` in `field`, after normalising the value for that field: for the
    /// `phi` items, whose text may be anything. A patient identifier goes through
    /// [`Pseudonymizer::pseudonym_of`].
    pub fn pseudonym(&self, field: &str, value: &str) -> String {
        self.hmac(field, &normalise(field, value))
    }

    /// The pseudonym of a patient identifier: `HMAC(key, field || 0x1f || normalised value)`.
    pub fn pseudonym_of(&self, id: &Identifier) -> String {
        self.hmac(id.field(), id.normalised())
    }

    fn hmac(&self, field: &str, normalised: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(field.as_bytes());
        mac.update(&[0x1f]);
        mac.update(normalised.as_bytes());
        super::hex(&mac.finalize().into_bytes())
    }
}

/// The key in a key file's bytes: text (printable ASCII and whitespace only) is trimmed of
/// surrounding whitespace, such as the newline an editor or `base64` adds; anything else is a binary
/// key and is taken whole.
fn key_bytes(raw: &[u8]) -> &[u8] {
    if raw
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        raw.trim_ascii()
    } else {
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file(dir: &Path, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("key");
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            let path = key_file(dir.path(), &[b'k'; 48], mode);
            let err = Pseudonymizer::from_file(&path).unwrap_err();
            assert!(err.contains(&format!("{mode:03o}")), "{err}");
        }
        for mode in [0o400, 0o600] {
            let path = key_file(dir.path(), &[b'k'; 48], mode);
            assert!(Pseudonymizer::from_file(&path).is_ok(), "{mode:o}");
        }
    }

    #[test]
    fn a_key_file_too_large_to_be_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(dir.path(), &vec![b'k'; 5000], 0o400);
        let err = Pseudonymizer::from_file(&path).unwrap_err();
        assert!(err.contains("larger than 4096 bytes"), "{err}");
    }

    #[test]
    fn a_text_key_is_trimmed_and_a_binary_key_is_taken_whole() {
        let dir = tempfile::tempdir().unwrap();
        let text = b"c2VjcmV0LWtleS1zZWNyZXQta2V5LXNlY3JldC1rZXktc2VjcmV0";
        let with_newline = [&text[..], b"\n"].concat();
        let a = Pseudonymizer::from_file(&key_file(dir.path(), &with_newline, 0o400)).unwrap();
        let b = Pseudonymizer::new(text).unwrap();
        assert_eq!(
            a.key_id(),
            b.key_id(),
            "the newline is not part of a text key"
        );
        // Binary: a key that happens to end in a whitespace byte keeps it.
        let mut binary: Vec<u8> = (0u8..40).map(|i| i.wrapping_mul(97) | 0x80).collect();
        binary.push(b'\n');
        let c = Pseudonymizer::from_file(&key_file(dir.path(), &binary, 0o400)).unwrap();
        let d = Pseudonymizer::new(&binary).unwrap();
        assert_eq!(c.key_id(), d.key_id());
        let trimmed = Pseudonymizer::new(&binary[..binary.len() - 1]).unwrap();
        assert_ne!(c.key_id(), trimmed.key_id());
    }

    #[test]
    fn the_commands_that_pseudonymise_refuse_to_start_without_a_key() {
        let settings = crate::config::Settings::load_with_env(None, Vec::new()).unwrap();
        let err = Pseudonymizer::from_settings(&settings).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("pseudonym_key_file"), "{err}");
    }

    #[test]
    fn pseudonyms_are_hmac_sha256_of_the_field_and_the_normalised_value() {
        // Known answers, computed independently (Python's hmac module): a change of library or
        // normalisation that would break the linkage of stored pseudonyms fails here.
        let p = Pseudonymizer::insecure_dev();
        assert_eq!(
            p.pseudonym("full_name", " Ada  LOVELACE"),
            "f28b2f082a8175a4484f6e2dc2ca24ee4aef42762f1821e646be45df6892c48e"
        );
        assert_eq!(p.key_id(), "435ddbbed5785c7a");
    }

    #[test]
    fn the_key_id_names_the_key_without_showing_it() {
        let p = Pseudonymizer::insecure_dev();
        assert_eq!(p.key_id().len(), 16);
        assert_eq!(p.key_id(), Pseudonymizer::insecure_dev().key_id());
        assert_ne!(p.key_id(), Pseudonymizer::new(&[7u8; 32]).unwrap().key_id());
        let shown = format!("{p:?}");
        assert!(
            shown.contains(p.key_id()) && !shown.contains("insecure"),
            "{shown}"
        );
    }
}
