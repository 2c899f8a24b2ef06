//! Patient identifiers made comparable: [`normalise`] folds the ways one value can be written, and
//! an [`Identifier`] is a normalised value that still identifies someone, the only form in which an
//! identifier reaches the HMAC (`key::Pseudonymizer::pseudonym_of`).

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// The same person written two ways must give one pseudonym: invisible format characters (Unicode
/// category Cf: zero-width joiners, bidi marks, a soft hyphen) are dropped, then Unicode
/// compatibility forms are folded (NFKC: a composed and a decomposed accent, full-width digits),
/// then the decimal digits of every script (category Nd: Arabic-Indic ٠١٢, Devanagari ०१२, ...)
/// become ASCII digits; case, spacing and punctuation that do not change the meaning are folded per
/// field. Plain ASCII, and text with neither format characters nor non-ASCII digits that is already
/// composed (NFC), normalise as they did before, so their pseudonyms are unchanged.
///
/// The result can be empty, or say nothing of anyone (a phone of no digit): only an [`Identifier`]
/// is ever pseudonymised.
pub fn normalise(field: &str, value: &str) -> String {
    // ASCII has no format character and no digit but its own, and is its own NFKC form: most
    // values skip the Unicode tables.
    let folded: std::borrow::Cow<str> = if value.is_ascii() {
        value.into()
    } else {
        // Format characters go first, so that one cannot keep NFKC from composing the letters
        // around it.
        value
            .chars()
            .filter(|c| c.general_category() != GeneralCategory::Format)
            .nfkc()
            .map(ascii_digit)
            .collect::<String>()
            .into()
    };
    let trimmed = folded.trim();
    match field {
        "phone" => {
            let plus = if trimmed.starts_with('+') { "+" } else { "" };
            let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
            format!("{plus}{digits}")
        }
        "national_id" | "mrn" => trimmed
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_uppercase)
            .collect(),
        "email" => trimmed.to_lowercase(),
        _ => trimmed
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase(),
    }
}

/// A decimal digit of any script (category Nd) as its ASCII digit; any other character as it is.
/// Unicode encodes the digits of a script as one run of ten, zero to nine, and runs that touch
/// (the mathematical digits) each start at a zero: the digit's value is its distance from the first
/// digit of its run of Nd characters, modulo ten.
fn ascii_digit(c: char) -> char {
    if c.is_ascii() || c.general_category() != GeneralCategory::DecimalNumber {
        return c;
    }
    let mut first = c as u32;
    while let Some(before) = first.checked_sub(1).and_then(char::from_u32)
        && before.general_category() == GeneralCategory::DecimalNumber
    {
        first -= 1;
    }
    let value = ((c as u32 - first) % 10) as u8;
    char::from(b'0' + value)
}

/// An identifier normalised for its field ([`normalise`]) that still says something of someone:
/// what [`super::Pseudonymizer::pseudonym_of`] takes, and the only way an identifier becomes a pseudonym.
/// One that normalises to nothing (a phone written "unknown", an ID of punctuation only) cannot be
/// made, so it can never give unrelated patients one shared pseudonym, the HMAC of
/// `field || 0x1f || ""`. `Debug` shows the field only.
#[derive(Clone, PartialEq, Eq)]
pub struct Identifier {
    field: &'static str,
    normalised: String,
}

/// An identifier that normalised to nothing identifying: which field (never its value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unusable {
    pub field: &'static str,
}

impl Unusable {
    /// What the identifier lacked, in words for a data query.
    pub fn lacks(self) -> &'static str {
        if self.field == "phone" {
            "no digit"
        } else {
            "no letter or digit"
        }
    }
}

impl Identifier {
    /// `value` normalised for `field`; refused when nothing identifying is left: a phone without
    /// a digit, any other field without a letter or a digit.
    pub fn new(field: &'static str, value: &str) -> Result<Identifier, Unusable> {
        let normalised = normalise(field, value);
        let identifies = if field == "phone" {
            normalised.bytes().any(|b| b.is_ascii_digit())
        } else {
            normalised.chars().any(char::is_alphanumeric)
        };
        if identifies {
            Ok(Identifier { field, normalised })
        } else {
            Err(Unusable { field })
        }
    }

    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The normalised value: what the HMAC reads after the field's name.
    pub(super) fn normalised(&self) -> &str {
        &self.normalised
    }
}

impl std::fmt::Debug for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identifier({}, value redacted)", self.field)
    }
}

#[cfg(test)]
mod tests {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

    use super::super::Pseudonymizer;
    use super::*;

    /// `+44 20 7946 0000` in the digits of `zero`'s script (`zero` being its digit zero).
    fn phone_in(zero: char) -> String {
        "+44 20 7946 0000"
            .chars()
            .map(|c| match c.to_digit(10) {
                Some(d) => char::from_u32(zero as u32 + d).unwrap(),
                None => c,
            })
            .collect()
    }

    #[test]
    fn each_scripts_digits_link_to_the_ascii_form() {
        let p = Pseudonymizer::insecure_dev();
        let ascii = p.pseudonym_of(&Identifier::new("phone", "+44 20 7946 0000").unwrap());
        for (script, zero) in [
            ("Arabic-Indic", '\u{0660}'),
            ("Extended Arabic-Indic (Persian, Urdu)", '\u{06F0}'),
            ("Devanagari", '\u{0966}'),
            ("Bengali", '\u{09E6}'),
            ("Tamil", '\u{0BE6}'),
            ("Thai", '\u{0E50}'),
            ("Myanmar", '\u{1040}'),
            ("full-width", '\u{FF10}'),
            ("mathematical double-struck", '\u{1D7D8}'),
            (
                "mathematical monospace (the fifth run of a block of five)",
                '\u{1D7F6}',
            ),
        ] {
            let written = phone_in(zero);
            assert_eq!(normalise("phone", &written), "+442079460000", "{script}");
            let id = Identifier::new("phone", &written).unwrap();
            assert_eq!(p.pseudonym_of(&id), ascii, "{script}");
        }
        // In an ID or an address too.
        assert_eq!(normalise("mrn", "MRN-\u{0667}\u{0668}\u{0669}"), "MRN789");
        assert_eq!(
            normalise("address", "\u{0661}\u{0662} Example Road"),
            "12 example road"
        );
    }

    #[test]
    fn every_decimal_digit_of_unicode_maps_to_its_value() {
        // Unicode encodes decimal digits in runs of ten from zero: every Nd character maps to an
        // ASCII digit, each run's first is 0 and its last 9, and no run is cut short.
        let mut run = 0u32;
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            if c.general_category() == GeneralCategory::DecimalNumber {
                let d = ascii_digit(c);
                assert!(d.is_ascii_digit(), "U+{:04X}", c as u32);
                assert_eq!(d as u32 - '0' as u32, run % 10, "U+{:04X}", c as u32);
                run += 1;
            } else {
                assert_eq!(
                    run % 10,
                    0,
                    "a run of digits ends short before U+{:04X}",
                    c as u32
                );
                run = 0;
            }
        }
    }

    #[test]
    fn invisible_format_characters_are_dropped_before_anything_else() {
        let p = Pseudonymizer::insecure_dev();
        let pseudonym =
            |field: &'static str, v: &str| p.pseudonym_of(&Identifier::new(field, v).unwrap());
        for (field, plain, with_format) in [
            ("full_name", "Ada Lovelace", "Ada\u{200D} Love\u{200B}lace"),
            (
                "phone",
                "+44 20 7946 0000",
                "\u{200F}+44 20\u{2066} 7946 0000\u{2069}",
            ),
            ("national_id", "QQ123456C", "QQ\u{00AD}123456C\u{FEFF}"),
            // A zero-width joiner between a letter and its accent: dropped first, NFKC composes.
            ("full_name", "Jos\u{e9}", "Jose\u{200D}\u{301}"),
        ] {
            assert_eq!(
                pseudonym(field, plain),
                pseudonym(field, with_format),
                "{field}"
            );
        }
    }

    #[test]
    fn an_identifier_that_normalises_to_nothing_is_unusable() {
        for (field, value) in [
            ("phone", "unknown"),
            ("phone", ""),
            ("phone", "+"),
            ("phone", "---"),
            ("phone", "\u{200B}\u{200D}"),
            ("national_id", "---"),
            ("national_id", "  "),
            ("mrn", "./-"),
            ("full_name", "..."),
            ("email", ""),
            ("address", "\u{FEFF}"),
        ] {
            assert_eq!(
                Identifier::new(field, value).map(|i| i.field()),
                Err(Unusable { field }),
                "{field}: {value:?}"
            );
        }
        // What still identifies is used: a letter or a digit outside a phone, a digit in one.
        for (field, value) in [("phone", "0"), ("mrn", "x"), ("full_name", "unknown")] {
            assert!(Identifier::new(field, value).is_ok(), "{field}: {value}");
        }
        assert_eq!(Unusable { field: "phone" }.lacks(), "no digit");
        let shown = format!("{:?}", Identifier::new("mrn", "MRN-778899").unwrap());
        assert!(!shown.contains("778899"), "{shown}");
    }

    #[test]
    fn ascii_values_normalise_as_before() {
        // The fast path and the Unicode path agree on ASCII, so no stored pseudonym changes.
        for (field, value) in [
            ("full_name", "  Ada   LOVELACE "),
            ("phone", "+44 (20) 7946-0000"),
            ("national_id", "qq 12 34 56 c"),
            ("email", " Ada@Example.org "),
        ] {
            let via_unicode = normalise(field, &format!("{value}\u{200B}"));
            assert_eq!(normalise(field, value), via_unicode, "{field}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::pipeline::parse::IDENTIFIER_FIELDS;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever an uploader writes, an identifier that is used is never the empty value.
        #[test]
        fn no_identifier_used_normalises_to_nothing(
            field in prop::sample::select(IDENTIFIER_FIELDS.to_vec()),
            value in any::<String>(),
        ) {
            if let Ok(id) = Identifier::new(field, &value) {
                prop_assert!(!id.normalised().is_empty() && id.normalised() != "+");
            }
        }
    }
}
