//! The fuzz targets' harnesses: what each target of `fuzz/` does with one input, and the oracles it
//! checks, in one place that the fuzzer (`cargo +nightly fuzz run TARGET`) and the ordinary test
//! suite (which replays every committed corpus file, `fuzz/corpus/TARGET/*`) both call. A harness
//! panics when an oracle fails; whatever the input, it must not otherwise.
//!
//! | target | boundary | oracles besides "no panic" |
//! |---|---|---|
//! | `crf_body` | an edc.crf.v1 body through parse, validate, de-identify | JSON re-serialised gives the same outcome; a refusal's hint agrees with the envelope; no distinctive body value in a reason |
//! | `validate_cel` | arbitrary item values on the demo protocols' forms (checks, alerts in CEL) | an accepted record's items validate again to themselves, with the same findings |
//! | `deidentify` | arbitrary Unicode identifiers and `phi` items | no planted value appears in anything de-identification outputs |
//! | `odm_clinical` | the ODM ClinicalData reader, message path (map, apply, validate) and `odm import`'s file path (write, re-read) | what the writer writes reads back as the same form; its batch headers read back |
//! | `study_from_odm` | the ODM metadata reader and `study from-odm` | the converter never makes an invalid protocol; what it prints passes `check-config` |
//! | `protocol_yaml` | a study protocol's YAML | a protocol that loads passes `check-config`'s checks; an empty record of each form validates without a panic |
//! | `amqp_inbound` | the content header's bytes into what `Inbound` reads | encode then parse gives the same properties; a copy fits its frame; refusals never quote a value; the body's verdict does not depend on the properties |
//! | `dlq_headers` | a dead letter's properties and body as the dlq tools read them | a replayed message and a copy put back carry no user id and none of the headers the rules drop; the preview holds no identifier |
//! | `config` | the configuration file and `EDC__*` overrides | a loaded URL's password never shows in `describe` |

mod body;
mod odm;
mod props;
#[cfg(test)]
mod seeds;
mod settings;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use crate::pipeline::Pseudonymizer;
use crate::protocol::Registry;

/// Every target, as named under `fuzz/fuzz_targets/` and `fuzz/corpus/`.
pub const TARGETS: [&str; 9] = [
    "crf_body",
    "validate_cel",
    "deidentify",
    "odm_clinical",
    "study_from_odm",
    "protocol_yaml",
    "amqp_inbound",
    "dlq_headers",
    "config",
];

/// Runs one input through one target's harness. Panics on an unknown target.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "crf_body" => body::crf_body(data),
        "validate_cel" => body::validate_cel(data),
        "deidentify" => body::deidentify(data),
        "odm_clinical" => odm::clinical(data),
        "study_from_odm" => odm::study_from_odm(data),
        "protocol_yaml" => settings::protocol_yaml(data),
        "amqp_inbound" => props::amqp_inbound(data),
        "dlq_headers" => props::dlq_headers(data),
        "config" => settings::config(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// The largest body the harnesses take (the default `max_message_bytes` is larger; a fuzzer's
/// inputs are smaller still).
pub const MAX_BODY: usize = 1 << 20;

/// The demo studies (`config/studies`).
pub fn demo_registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        Registry::from_texts(&[
            (
                "DEMO-001.yaml",
                include_str!("../../config/studies/DEMO-001.yaml"),
            ),
            (
                "DEMO-002.yaml",
                include_str!("../../config/studies/DEMO-002.yaml"),
            ),
        ])
        .expect("the demo protocols load")
    })
}

/// The studies of the ODM tests (`tests/data/odm`): ODM settings, two versions of one study.
pub fn odm_registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| {
        Registry::from_texts(&[
            (
                "v1.yaml",
                include_str!("../../tests/data/odm/map-study-v1.yaml"),
            ),
            (
                "v2.yaml",
                include_str!("../../tests/data/odm/map-study-v2.yaml"),
            ),
            (
                "psn.yaml",
                include_str!("../../tests/data/odm/map-study-psn.yaml"),
            ),
            (
                "imp.yaml",
                include_str!("../../tests/data/odm-import/ST.IMPORT.yaml"),
            ),
        ])
        .expect("the ODM test protocols load")
    })
}

pub fn pseudonymizer() -> &'static Pseudonymizer {
    static P: OnceLock<Pseudonymizer> = OnceLock::new();
    P.get_or_init(Pseudonymizer::insecure_dev)
}

/// The separator of the parts of a structured input: a line `%%`.
pub const SEPARATOR: &[u8] = b"\n%%\n";

/// `data` cut at each [`SEPARATOR`], at most `n` parts (the last takes the rest).
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                out.push(&rest[..at]);
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

/// Whether finding `value` in an output can only mean it was copied there: our own texts (reasons,
/// field names, pseudonyms in hex) are ASCII, so a value with a character outside ASCII cannot be
/// one of them by chance. (An ASCII value can: the fuzzer finds `field `schema` is missing` by
/// itself, and planted it as a value.)
pub fn distinctive(value: &str) -> bool {
    let trimmed = value.trim();
    trimmed.chars().any(|c| !c.is_ascii() && !c.is_whitespace()) && trimmed.chars().count() >= 2
}
