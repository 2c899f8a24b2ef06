//! The code list of a `code` item: a list of codes, or a map code -> label (the labels an EDC shows,
//! an ODM CodeList's decodes). YAML scalars are taken as written, whatever YAML would make of them:
//! `01` is the code "01" and `Yes` the label "Yes" (not a number, not a boolean), no quotes needed.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// The codes in the order the protocol lists them, each with its label if it has one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Codes {
    entries: Vec<(String, Option<String>)>,
}

impl Codes {
    /// A list of codes without labels.
    pub fn list<I: IntoIterator<Item = S>, S: Into<String>>(codes: I) -> Codes {
        Codes {
            entries: codes.into_iter().map(|c| (c.into(), None)).collect(),
        }
    }

    /// Codes with their labels, in order.
    pub fn labelled<I: IntoIterator<Item = (S, S)>, S: Into<String>>(codes: I) -> Codes {
        Codes {
            entries: codes
                .into_iter()
                .map(|(c, l)| (c.into(), Some(l.into())))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `code` (in its canonical form) is one of the codes.
    pub fn contains(&self, code: &str) -> bool {
        self.entries.iter().any(|(c, _)| c == code)
    }

    /// The codes, in order.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(c, _)| c.as_str())
    }

    /// The label of `code`, if it has one.
    pub fn label(&self, code: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(c, _)| c == code)
            .and_then(|(_, l)| l.as_deref())
    }

    /// Rewrites every code with `f` (to its canonical form); codes `f` refuses are returned.
    pub(crate) fn canonicalise(&mut self, f: impl Fn(&str) -> Option<String>) -> Vec<String> {
        let mut refused = Vec::new();
        for (code, _) in &mut self.entries {
            match f(code) {
                Some(c) => *code = c,
                None => refused.push(code.clone()),
            }
        }
        refused
    }
}

/// A YAML scalar taken as text, as written.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a code (a text or a number)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Codes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Codes, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Codes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of codes, or a map of code to label")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Codes, A::Error> {
                let mut entries = Vec::new();
                while let Some(Scalar(c)) = seq.next_element()? {
                    entries.push((c, None));
                }
                Ok(Codes { entries })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Codes, A::Error> {
                let mut entries = Vec::new();
                while let Some((Scalar(c), Scalar(l))) = map.next_entry()? {
                    entries.push((c, Some(l)));
                }
                Ok(Codes { entries })
            }
        }
        d.deserialize_any(V)
    }
}

/// A list when no code has a label, else a map (a code without a label gets an empty one).
impl Serialize for Codes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.entries.iter().all(|(_, l)| l.is_none()) {
            let mut seq = s.serialize_seq(Some(self.entries.len()))?;
            for (c, _) in &self.entries {
                seq.serialize_element(c)?;
            }
            seq.end()
        } else {
            let mut map = s.serialize_map(Some(self.entries.len()))?;
            for (c, l) in &self.entries {
                map.serialize_entry(c, l.as_deref().unwrap_or(""))?;
            }
            map.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Holder {
        codes: Codes,
    }

    fn read(yaml: &str) -> Codes {
        serde_saphyr::from_str::<Holder>(yaml).unwrap().codes
    }

    #[test]
    fn a_list_or_a_map_of_any_scalars() {
        assert_eq!(read("codes: [Y, N]"), Codes::list(["Y", "N"]));
        assert_eq!(
            read("codes: [1, 2, 03, \"04\", 1.50, Yes]"),
            Codes::list(["1", "2", "03", "04", "1.50", "Yes"])
        );
        let map = read("codes: {1: Mild, 2: Moderate, 03: Severe, Y: Yes, N: No}");
        assert_eq!(
            map,
            Codes::labelled([
                ("1", "Mild"),
                ("2", "Moderate"),
                ("03", "Severe"),
                ("Y", "Yes"),
                ("N", "No")
            ])
        );
        assert_eq!(map.label("2"), Some("Moderate"));
        assert!(map.contains("03") && !map.contains("3"));
        assert!(serde_saphyr::from_str::<Holder>("codes: 5").is_err());
        assert!(serde_saphyr::from_str::<Holder>("codes: [[1]]").is_err());
    }

    #[test]
    fn written_back_as_read() {
        for yaml in ["codes: [Y, N]", "codes: {1: Mild, 2: Moderate}"] {
            let codes = read(yaml);
            let text = serde_saphyr::to_string(&Holder {
                codes: codes.clone(),
            })
            .unwrap();
            assert_eq!(read(&text), codes, "{text}");
        }
    }
}
