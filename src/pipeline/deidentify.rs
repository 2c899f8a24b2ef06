//! Stage 3: a [`Validated`] record made fit to store.
//!
//! Every direct identifier becomes a keyed pseudonym, `HMAC-SHA256(key, field || 0x1f || normalised
//! value)` in hex, so the same patient links across records and uploads without being named, and
//! nobody without the key can test a guess. `birth_date` is kept only as a birth year, or `90+` when the
//! patient was 90 or older at capture (HIPAA Safe Harbor). Items the protocol marks `phi: true` are
//! replaced by their pseudonym inside `items`. Nothing identifying survives this stage.
//!
//! An identifier that normalises to nothing (a phone written "unknown" or in no digit at all, an
//! ID of punctuation only) gets no pseudonym: it would be the same for every such patient and link
//! strangers. The record gets a data query instead (status `queried`), naming the field, never
//! its value.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::key::{Identifier, Pseudonymizer, Unusable};
use super::validate::{Finding, Validated};
use crate::protocol::Form;

/// Prefix of a pseudonymised item value inside `items`.
pub const PSEUDONYM_PREFIX: &str = "psn:";

/// Whole years between `birth` and `on`.
fn age_on(birth: NaiveDate, on: NaiveDate) -> i32 {
    let mut age = on.year() - birth.year();
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        age -= 1;
    }
    age
}

/// `"1961"`, or `"90+"` when the patient was 90 or older on the capture date.
pub fn birth_year(birth: NaiveDate, captured_at: DateTime<FixedOffset>) -> String {
    if age_on(birth, captured_at.date_naive()) >= 90 {
        "90+".to_string()
    } else {
        birth.year().to_string()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Accepted,
    Queried,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Accepted => "accepted",
            Status::Queried => "queried",
        }
    }
}

/// A record ready to store: nothing in it names the patient.
#[derive(Clone, Debug)]
pub struct Deidentified {
    pub record_id: Uuid,
    pub version: i32,
    pub study: String,
    pub site: String,
    pub subject: String,
    pub visit: String,
    pub form: String,
    pub captured_at: DateTime<FixedOffset>,
    pub entered_by: String,
    pub batch_id: Option<Uuid>,
    pub batch_size: Option<u32>,
    pub protocol_version: String,
    /// The items, with `phi` items replaced by `psn:<pseudonym>`.
    pub items: Value,
    /// `{field: pseudonym}` for each identifier received.
    pub pseudonyms: Value,
    pub birth_year: Option<String>,
    pub status: Status,
    pub findings: Vec<Finding>,
    /// Ids of the protocol alerts raised (an `alert.raised` event each).
    pub alerts: Vec<String>,
}

/// The data query of an identifier that normalised to nothing: which field, never its value.
pub fn unusable_finding(unusable: Unusable) -> Finding {
    let field = unusable.field;
    Finding {
        check: format!("identifiers.{field}"),
        row: None,
        message: format!(
            "identifier {field} could not be used: nothing identifying is left once it is \
             normalised ({}); no pseudonym is stored for it",
            unusable.lacks()
        ),
    }
}

pub fn deidentify(v: Validated, p: &Pseudonymizer) -> Deidentified {
    let Validated {
        envelope: e,
        protocol,
        mut findings,
        alerts,
    } = v;
    let form = &protocol.forms[&e.form];
    let mut items = e.items;
    for (name, value) in items.iter_mut() {
        // A null stays null: it says nothing, and its pseudonym would be the same for everyone.
        if form.items.get(name).is_some_and(|d| d.phi) && !value.is_null() {
            let text = match &*value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            *value = Value::String(format!(
                "{PSEUDONYM_PREFIX}{}",
                p.pseudonym(&format!("item:{name}"), &text)
            ));
        }
    }
    pseudonymise_rows(form, &mut items, p);
    let mut pseudonyms = Map::new();
    for (field, value) in &e.identifiers.fields {
        match Identifier::new(field, value) {
            Ok(id) => {
                pseudonyms.insert((*field).to_string(), Value::String(p.pseudonym_of(&id)));
            }
            Err(unusable) => findings.push(unusable_finding(unusable)),
        }
    }
    let birth_year = e
        .identifiers
        .birth_date
        .map(|b| birth_year(b, e.captured_at));
    let status = if findings.is_empty() {
        Status::Accepted
    } else {
        Status::Queried
    };
    Deidentified {
        record_id: e.record_id,
        version: e.version,
        study: e.study,
        site: e.site,
        subject: e.subject,
        visit: e.visit,
        form: e.form,
        captured_at: e.captured_at,
        entered_by: e.entered_by,
        batch_id: e.batch.as_ref().map(|b| b.id),
        batch_size: e.batch.as_ref().and_then(|b| b.size),
        protocol_version: protocol.version.clone(),
        items: Value::Object(items),
        pseudonyms: Value::Object(pseudonyms),
        birth_year,
        status,
        findings,
        alerts,
    }
}

/// `phi` items inside the rows of repeating groups become pseudonyms too, under the field
/// `item:GROUP/ITEM`: never the repeat key, so a value links across rows and records. A null
/// stays null.
fn pseudonymise_rows(form: &Form, items: &mut Map<String, Value>, p: &Pseudonymizer) {
    for (group_name, group) in &form.groups {
        if !group.items.values().any(|d| d.phi) {
            continue;
        }
        let Some(Value::Object(rows)) = items.get_mut(group_name) else {
            continue;
        };
        for row in rows.values_mut() {
            let Value::Object(row) = row else { continue };
            for (name, value) in row.iter_mut() {
                if value.is_null() || !group.items.get(name).is_some_and(|d| d.phi) {
                    continue;
                }
                let text = crate::protocol::value::stored_text(value).unwrap_or_default();
                *value = Value::String(format!(
                    "{PSEUDONYM_PREFIX}{}",
                    p.pseudonym(&format!("item:{group_name}/{name}"), &text)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::tests::sample;
    use super::*;
    use crate::pipeline::key::normalise;

    #[test]
    fn the_same_name_composed_or_decomposed_links() {
        let p = Pseudonymizer::insecure_dev();
        let composed = "Jos\u{e9} Mu\u{f1}oz";
        let decomposed = "Jose\u{301} Mun\u{303}oz";
        assert_ne!(composed, decomposed);
        assert_eq!(
            p.pseudonym("full_name", composed),
            p.pseudonym("full_name", decomposed)
        );
        // Full-width digits are digits.
        assert_eq!(
            p.pseudonym("phone", "+44 \u{ff12}\u{ff10} 7946 0000"),
            p.pseudonym("phone", "+44 20 7946 0000")
        );
        // ASCII is untouched by NFKC: existing pseudonyms stay as they were.
        assert_eq!(normalise("full_name", "  Ada   LOVELACE "), "ada lovelace");
    }

    use crate::protocol::Registry;
    use serde_json::json;

    fn prepare(v: &Value) -> Deidentified {
        let registry = Registry::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/studies"),
        )
        .unwrap();
        super::super::prepare(
            &serde_json::to_vec(v).unwrap(),
            1 << 20,
            &registry,
            &Pseudonymizer::insecure_dev(),
        )
        .unwrap()
    }

    #[test]
    fn no_identifier_survives() {
        let d = prepare(&sample());
        let shown = format!("{d:?}");
        for needle in [
            "Ada",
            "Lovelace",
            "1961-03-02",
            "7946",
            "QQ",
            "778899",
            "Example Road",
            "ada@",
        ] {
            assert!(!shown.contains(needle), "{needle} in {shown}");
        }
        assert_eq!(d.birth_year.as_deref(), Some("1961"));
        assert_eq!(d.pseudonyms.as_object().unwrap().len(), 7);
    }

    #[test]
    fn pseudonyms_link_the_same_person_written_differently() {
        let p = Pseudonymizer::insecure_dev();
        assert_eq!(
            p.pseudonym("full_name", "Ada  Lovelace "),
            p.pseudonym("full_name", "ada lovelace")
        );
        assert_eq!(
            p.pseudonym("phone", "+44 20-7946"),
            p.pseudonym("phone", "+44207946")
        );
        assert_ne!(p.pseudonym("mrn", "1"), p.pseudonym("national_id", "1"));
        let other = Pseudonymizer::new(&[7u8; 32]).unwrap();
        assert_ne!(p.pseudonym("mrn", "1"), other.pseudonym("mrn", "1"));
    }

    #[test]
    fn the_very_old_are_90_plus() {
        let at = DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z").unwrap();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(birth_year(d("1936-11-20"), at), "90+");
        assert_eq!(birth_year(d("1936-11-21"), at), "1936");
    }

    #[test]
    fn phi_items_become_pseudonyms() {
        let mut v = sample();
        v["form"] = json!("AE");
        v["items"] =
            json!({"AETERM": "Headache after visiting Ada", "AESER": "N", "AESTDAT": "2026-11-01"});
        let d = prepare(&v);
        let term = d.items["AETERM"].as_str().unwrap();
        assert!(term.starts_with(PSEUDONYM_PREFIX) && !term.contains("Ada"));
        assert_eq!(d.items["AESER"], json!("N"));
    }

    #[test]
    fn a_null_phi_item_stays_null() {
        let mut v = sample();
        v["form"] = json!("AE");
        v["items"] = json!({"AETERM": null, "AESER": "N", "AESTDAT": "2026-11-01"});
        let d = prepare(&v);
        assert_eq!(d.items["AETERM"], Value::Null);
    }

    /// A record of another patient: every identifier differs from the sample's.
    fn other_patient(phone: &str) -> Value {
        let mut v = sample();
        v["identifiers"] = json!({"full_name": "Grace Hopper", "birth_date": "1906-12-09",
            "phone": phone, "national_id": "ZZ 98 76 54 A", "mrn": "MRN-112233",
            "address": "1 Navy Yard, Arlington", "email": "grace@example.org"});
        v
    }

    #[test]
    fn two_patients_with_unusable_phones_share_no_pseudonym() {
        let mut ada = sample();
        ada["identifiers"]["phone"] = json!("unknown");
        let a = prepare(&ada);
        let b = prepare(&other_patient("---"));
        for d in [&a, &b] {
            assert!(d.pseudonyms.get("phone").is_none(), "{:?}", d.pseudonyms);
            assert_eq!(d.pseudonyms.as_object().unwrap().len(), 6);
            assert_eq!(d.status, Status::Queried);
            assert_eq!(d.findings.len(), 1, "{:?}", d.findings);
            assert_eq!(d.findings[0].check, "identifiers.phone");
            assert!(d.findings[0].message.contains("no digit"));
        }
        let shown = format!("{:?}", a.findings);
        assert!(!shown.contains("unknown"), "{shown}");
        let theirs: Vec<&Value> = b.pseudonyms.as_object().unwrap().values().collect();
        for (field, mine) in a.pseudonyms.as_object().unwrap() {
            assert!(
                !theirs.contains(&mine),
                "{field}: two patients share a pseudonym"
            );
        }
    }

    #[test]
    fn a_phone_in_arabic_indic_digits_links_to_the_same_phone_in_ascii() {
        let mut arabic = sample();
        arabic["identifiers"]["phone"] = json!(
            "+\u{0664}\u{0664} \u{0662}\u{0660} \u{0667}\u{0669}\u{0664}\u{0666} \u{0660}\u{0660}\u{0660}\u{0660}"
        );
        let a = prepare(&arabic);
        let ascii = prepare(&sample());
        assert_eq!(a.pseudonyms["phone"], ascii.pseudonyms["phone"]);
        assert_eq!(a.status, Status::Accepted);
        // Another patient's phone in Devanagari digits does not link to it.
        let b = prepare(&other_patient("+\u{0967}\u{0968}\u{0969}"));
        assert_ne!(a.pseudonyms["phone"], b.pseudonyms["phone"]);
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(
            Pseudonymizer::new(b"short")
                .unwrap_err()
                .contains("at least 32")
        );
    }
}
