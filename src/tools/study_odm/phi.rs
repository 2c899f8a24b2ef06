//! Guessing which items are direct identifiers, so they become `phi: true` (stored only as keyed
//! pseudonyms). Each guess has a reason, printed for a person to review.
//!
//! First what the source system says: REDCap's `redcap:Identifier="y"`, OpenClinica's `PHI="Yes"`
//! (on `OpenClinica:ItemPresentInForm`, or any vendor attribute named `PHI`), REDCap validation
//! as an e-mail address or a phone number, REDCap file uploads (a document's name may name a
//! person). Then the words of the ItemDef's Name, OID and Question, cut into lower-case words
//! (`DateOfBirth`, `date_of_birth` and `Date of birth` are the same three words), against phrases
//! for names, initials, birth dates, phones, e-mails, addresses, postcodes, national identifiers
//! and medical record numbers, in English and a few in German, French and Spanish. Conservatively:
//! whole words or phrases only (`Medication Name` is no person's name, `initial visit` no
//! initials), and none for boolean, code and binary items (a choice from a list is not an
//! identifier; `Phone contact made?` is a yes/no); a birth date only for date, text and integer
//! items, the other kinds only for text and integer items.

use crate::odm::metadata::ItemDef;
use crate::protocol::ItemType;

use super::report::shown;

/// What a phrase says an item holds, and the phrases (each a sequence of whole words).
const PHRASES: &[(&str, &[&[&str]])] = &[
    (
        "a birth date",
        &[
            &["date", "of", "birth"],
            &["birth", "date"],
            &["birthdate"],
            &["birth", "dt"],
            &["birth", "dtc"],
            &["birthday"],
            &["dob"],
            &["brthdt"],
            &["brthdtc"],
            &["brthdat"],
            &["geburtsdatum"],
            &["date", "de", "naissance"],
            &["fecha", "de", "nacimiento"],
        ],
    ),
    (
        "a person's name",
        &[
            &["name"],
            &["first", "name"],
            &["last", "name"],
            &["middle", "name"],
            &["maiden", "name"],
            &["family", "name"],
            &["given", "name"],
            &["full", "name"],
            &["patient", "name"],
            &["patient", "s", "name"],
            &["subject", "name"],
            &["subject", "s", "name"],
            &["contact", "name"],
            &["person", "name"],
            &["name", "of", "patient"],
            &["name", "of", "subject"],
            &["name", "of", "the", "patient"],
            &["name", "of", "the", "subject"],
            &["firstname"],
            &["lastname"],
            &["fname"],
            &["lname"],
            &["surname"],
            &["forename"],
            &["vorname"],
            &["nachname"],
            &["familienname"],
            &["prenom"],
            &["prénom"],
            &["nom", "de", "famille"],
            &["apellido"],
            &["apellidos"],
        ],
    ),
    (
        "initials",
        &[&["initials"], &["subjinit"], &["ptinit"], &["inits"]],
    ),
    (
        "a phone or fax number",
        &[
            &["phone"],
            &["telephone"],
            &["tel"],
            &["cellphone"],
            &["mobile", "number"],
            &["fax"],
            &["telefon"],
            &["telefonnummer"],
            &["téléphone"],
            &["telefono"],
            &["teléfono"],
        ],
    ),
    (
        "an e-mail address",
        &[
            &["email"],
            &["e", "mail"],
            &["emailaddress"],
            &["courriel"],
            &["correo", "electronico"],
            &["correo", "electrónico"],
        ],
    ),
    (
        "an address",
        &[
            &["address"],
            &["street"],
            &["addr"],
            &["city"],
            &["town"],
            &["adresse"],
            &["anschrift"],
            &["strasse"],
            &["straße"],
            &["wohnort"],
            &["direccion"],
            &["dirección"],
        ],
    ),
    (
        "a postcode",
        &[
            &["zip"],
            &["zipcode"],
            &["postcode"],
            &["post", "code"],
            &["postal", "code"],
            &["postleitzahl"],
            &["plz"],
            &["code", "postal"],
            &["codigo", "postal"],
            &["código", "postal"],
        ],
    ),
    (
        "a national identifier",
        &[
            &["ssn"],
            &["social", "security"],
            &["national", "id"],
            &["national", "identifier"],
            &["national", "insurance"],
            &["nhs", "number"],
            &["nhs", "no"],
            &["passport"],
            &["driver", "license"],
            &["drivers", "license"],
            &["driver", "s", "license"],
            &["driving", "licence"],
            &["health", "card"],
            &["insurance", "number"],
            &["medicare", "number"],
            &["medicaid", "number"],
            &["personnummer"],
            &["tax", "id"],
        ],
    ),
    (
        "a medical record number",
        &[
            &["mrn"],
            &["medical", "record", "number"],
            &["medical", "record", "no"],
            &["hospital", "number"],
            &["hospital", "id"],
            &["chart", "number"],
        ],
    ),
];

/// Why `def`, converted to an item of `kind`, looks like a direct identifier; None if it does not.
pub(super) fn guess(def: &ItemDef, kind: ItemType) -> Option<String> {
    if def
        .vendor_attr("projectredcap", "Identifier")
        .is_some_and(|v| v.eq_ignore_ascii_case("y"))
    {
        return Some("REDCap marks it an identifier (redcap:Identifier)".into());
    }
    if !def.vendor_phi.is_empty() {
        return Some("the source system flags it as PHI (PHI=\"Yes\")".into());
    }
    match def.vendor_attr("projectredcap", "TextValidationType") {
        Some("email") => return Some("REDCap validates it as an e-mail address".into()),
        Some(v) if v.starts_with("phone") => {
            return Some("REDCap validates it as a phone number".into());
        }
        _ => {}
    }
    if def.vendor_attr("projectredcap", "FieldType") == Some("file") {
        return Some("a REDCap file upload (a document's name may identify a person)".into());
    }
    if matches!(kind, ItemType::Boolean | ItemType::Code | ItemType::Binary) {
        return None;
    }
    let question = def.question.best();
    let texts = [
        ("Name", def.name.as_deref()),
        ("OID", Some(def.oid.as_str())),
        ("Question", question.as_deref()),
    ];
    for (what, phrases) in PHRASES {
        let allowed = match *what {
            "a birth date" => !matches!(kind, ItemType::Decimal | ItemType::Time),
            _ => matches!(kind, ItemType::Text | ItemType::Integer),
        };
        if !allowed {
            continue;
        }
        for (field, text) in texts {
            let Some(text) = text else { continue };
            let words = words(text);
            let whole_name = phrases.iter().any(|p| *p == ["name"]) && words == ["name"];
            let found = phrases
                .iter()
                .filter(|p| **p != ["name"])
                .any(|p| contains(&words, p));
            if found || whole_name {
                return Some(format!("its {field} {} looks like {what}", shown(text)));
            }
        }
    }
    None
}

/// The lower-case words of a name or a text: cut at every character that is not a letter or a
/// digit, where a lower-case letter is followed by an upper-case one (`DateOfBirth`), and between
/// letters and digits (`email1`, a numbered copy of a field, is `email` and `1`).
pub(super) fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    let mut prev_digit = false;
    for c in text.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            prev_lower = false;
            continue;
        }
        let digit = c.is_numeric();
        let case_change = c.is_uppercase() && prev_lower;
        if (case_change || digit != prev_digit) && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        prev_digit = digit;
        prev_lower = c.is_lowercase();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn contains(words: &[String], phrase: &[&str]) -> bool {
    !phrase.is_empty()
        && words
            .windows(phrase.len())
            .any(|w| w.iter().zip(phrase).all(|(a, b)| a == b))
}
