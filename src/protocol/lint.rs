//! What `check-config` says of one item definition: a field used on a type it does not apply to, an
//! empty range, codes not of their code type. Also puts the item's codes in their canonical form.

use std::collections::HashSet;

use super::value::canonical_code;
use super::{Item, ItemType};

impl Item {
    /// Every misuse found (our words); on success the codes are canonical for their code type.
    pub(crate) fn lint(&mut self) -> Vec<String> {
        let mut p = Vec::new();
        let numeric = self.kind.is_numeric();
        for (field, range) in [("range", self.range), ("hard_range", self.hard_range)] {
            if let Some([lo, hi]) = range {
                if !numeric {
                    p.push(format!("{field} is only for integer and decimal items"));
                } else if lo.is_nan() || hi.is_nan() || lo > hi {
                    p.push(format!("{field} [{lo}, {hi}] is empty"));
                }
            }
        }
        match (&self.codes, self.kind) {
            (Some(codes), ItemType::Code) if codes.is_empty() => p.push("codes is empty".into()),
            (None, ItemType::Code) => p.push("a code item needs codes".into()),
            (Some(_), kind) if kind != ItemType::Code => {
                p.push("codes is only for code items".into())
            }
            _ => {}
        }
        if self.code_type.is_some() && self.kind != ItemType::Code {
            p.push("code_type is only for code items".into());
        }
        if let Some(codes) = &mut self.codes
            && self.kind == ItemType::Code
        {
            let kind = self.code_type.unwrap_or_default();
            let refused = codes.canonicalise(|c| canonical_code(kind, c));
            if !refused.is_empty() {
                p.push(format!(
                    "codes {} are not {} codes (code_type)",
                    refused.join(", "),
                    kind.as_str()
                ));
            }
            let mut seen = HashSet::new();
            let twice: Vec<&str> = codes.codes().filter(|c| !seen.insert(*c)).collect();
            if !twice.is_empty() {
                p.push(format!("codes {} are listed twice", twice.join(", ")));
            }
        }
        if self.max_length.is_some() && self.kind != ItemType::Text {
            p.push("max_length is only for text items".to_string());
        }
        if self.max_length == Some(0) {
            p.push("max_length must be at least 1".to_string());
        }
        if let Some(d) = self.digits {
            if !numeric {
                p.push("digits is only for integer and decimal items".to_string());
            } else if d == 0 {
                p.push("digits must be at least 1".to_string());
            }
        }
        if let Some(f) = self.fraction_digits {
            if self.kind != ItemType::Decimal {
                p.push("fraction_digits is only for decimal items".to_string());
            } else if self.digits.is_some_and(|d| f > d) {
                p.push(format!(
                    "fraction_digits {f} is more than digits {}",
                    self.digits.unwrap_or(0)
                ));
            }
        }
        if let Some(units) = &self.units {
            if !numeric {
                p.push("units is only for integer and decimal items".to_string());
            } else if units.is_empty() {
                p.push("units is empty".to_string());
            } else if let Some(u) = &self.unit
                && !units.contains(u)
            {
                p.push(format!("unit {u} is not one of units"));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CodeType, Codes};

    fn item(yaml: &str) -> Item {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn problems(yaml: &str) -> Vec<String> {
        item(yaml).lint()
    }

    #[test]
    fn fields_on_the_wrong_type_are_reported_together() {
        let p = problems(
            "{type: text, hard_range: [1, 2], digits: 3, fraction_digits: 1, units: [mg], code_type: integer}",
        );
        assert_eq!(p.len(), 5, "{p:?}");
        for needle in [
            "hard_range is only",
            "digits is only",
            "fraction_digits is only",
            "units is only",
            "code_type is only",
        ] {
            assert!(p.iter().any(|x| x.contains(needle)), "{needle}: {p:?}");
        }
        let p = problems("{type: integer, fraction_digits: 2}");
        assert_eq!(p, vec!["fraction_digits is only for decimal items"]);
    }

    #[test]
    fn ranges_digits_and_units_must_make_sense() {
        let p = problems(
            "{type: decimal, hard_range: [5, 1], digits: 2, fraction_digits: 3, units: [mg, g], unit: kg}",
        );
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(problems("{type: decimal, range: [1, 2], hard_range: [0, 5], digits: 4, fraction_digits: 2, units: [mg, g], unit: g}").is_empty());
        assert_eq!(
            problems("{type: integer, digits: 0}"),
            vec!["digits must be at least 1"]
        );
    }

    #[test]
    fn codes_take_the_canonical_form_of_their_type() {
        let mut i = item("{type: code, code_type: integer, codes: {\"01\": Yes, \"+2\": No}}");
        assert!(i.lint().is_empty());
        assert_eq!(i.codes, Some(Codes::labelled([("1", "Yes"), ("2", "No")])));
        assert_eq!(i.code_type, Some(CodeType::Integer));

        let p = problems("{type: code, code_type: integer, codes: [\"1\", \"01\", A]}");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("codes A are not integer codes"), "{p:?}");
        assert!(p[1].contains("codes 1 are listed twice"), "{p:?}");

        let mut d = item("{type: code, code_type: decimal, codes: [\"1.50\", 2]}");
        assert!(d.lint().is_empty());
        assert_eq!(d.codes, Some(Codes::list(["1.5", "2"])));
        // Text codes are kept as written.
        let mut t = item("{type: code, codes: [\"01\", \"1\"]}");
        assert!(t.lint().is_empty());
        assert_eq!(t.codes, Some(Codes::list(["01", "1"])));
    }
}
