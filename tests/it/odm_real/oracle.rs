//! The oracle of the real exports: what `item_values` must hold for an ODM file, read with
//! roxmltree (a conformant XML parser), independently of edc-ingest's own reader and mapping.
//!
//! A row's key is `subject visit visit_repeat form form_repeat item_group group_repeat item`, as
//! `item_values` has them (`-` for the null group and row outside repeating groups), and its value
//! the ItemData's `Value` in the canonical form of its item's type ([`canonical`]).

use std::collections::{BTreeMap, HashMap};

const ODM: &str = "http://www.cdisc.org/ns/odm/v1.3";

/// What the file's metadata says of an item: its DataType and, when it refers to a code list,
/// that code list's DataType.
struct ItemType {
    data_type: String,
    code_type: Option<String>,
}

/// The expected `item_values` of a file: key -> canonical value; and the count of its forms.
pub struct Expected {
    pub values: BTreeMap<String, String>,
    pub forms: usize,
}

fn odm<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Vec<roxmltree::Node<'a, 'i>> {
    node.children()
        .filter(|c| c.tag_name().namespace() == Some(ODM) && c.tag_name().name() == name)
        .collect()
}

fn attr<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attribute(name)
}

/// Reads `metadata` (one Study with one MetaDataVersion) and `clinical` (its ClinicalData; the
/// same text when one file holds both): the rows `item_values` must hold once every form is
/// stored. `visit` is the visit of forms outside any StudyEventData (the `--visit` given to the
/// commands).
pub fn expected(metadata: &str, clinical: &str, visit: Option<&str>) -> Expected {
    let doc = roxmltree::Document::parse(metadata).expect("the oracle parses the metadata");
    let data = roxmltree::Document::parse(clinical).expect("the oracle parses the file");
    let root = data.root_element();
    let mut items: HashMap<String, ItemType> = HashMap::new();
    let mut repeating: HashMap<String, bool> = HashMap::new();
    for mdv in doc
        .descendants()
        .filter(|n| n.has_tag_name((ODM, "MetaDataVersion")))
    {
        let code_lists: HashMap<&str, &str> = odm(mdv, "CodeList")
            .into_iter()
            .map(|c| (attr(c, "OID").unwrap(), attr(c, "DataType").unwrap()))
            .collect();
        for def in odm(mdv, "ItemDef") {
            let code_type = odm(def, "CodeListRef")
                .first()
                .map(|r| code_lists[attr(*r, "CodeListOID").unwrap()].to_string());
            let data_type = attr(def, "DataType").unwrap().to_string();
            items.insert(
                attr(def, "OID").unwrap().into(),
                ItemType {
                    data_type,
                    code_type,
                },
            );
        }
        for def in odm(mdv, "ItemGroupDef") {
            let yes = attr(def, "Repeating") == Some("Yes");
            repeating.insert(attr(def, "OID").unwrap().into(), yes);
        }
    }
    let mut values = BTreeMap::new();
    let mut forms = 0;
    for clinical in odm(root, "ClinicalData") {
        for subject in odm(clinical, "SubjectData") {
            let key = attr(subject, "SubjectKey").unwrap();
            // A REDCap classic project puts FormData directly under SubjectData: no study event.
            let mut events: Vec<(String, String, roxmltree::Node)> = odm(subject, "StudyEventData")
                .into_iter()
                .map(|e| {
                    let oid = attr(e, "StudyEventOID").unwrap().to_string();
                    let repeat = attr(e, "StudyEventRepeatKey").unwrap_or("1").to_string();
                    (oid, repeat, e)
                })
                .collect();
            if !odm(subject, "FormData").is_empty() {
                let v = visit.expect("forms outside a study event need a visit");
                events.push((v.to_string(), "1".to_string(), subject));
            }
            for (event, event_repeat, node) in events {
                for form in odm(node, "FormData") {
                    forms += 1;
                    let oid = attr(form, "FormOID").unwrap();
                    let form_repeat = attr(form, "FormRepeatKey").unwrap_or("1");
                    for group in odm(form, "ItemGroupData") {
                        let group_oid = attr(group, "ItemGroupOID").unwrap();
                        let (g, row) = if repeating[group_oid] {
                            let row = attr(group, "ItemGroupRepeatKey")
                                .expect("a row of a repeating group has its repeat key");
                            (group_oid, row)
                        } else {
                            ("-", "-")
                        };
                        for item in odm(group, "ItemData") {
                            let item_oid = attr(item, "ItemOID").unwrap();
                            let value = attr(item, "Value").expect("the oracle reads Value only");
                            let k = format!(
                                "{key} {event} {event_repeat} {oid} {form_repeat} {g} {row} {item_oid}"
                            );
                            let v = canonical(&items[item_oid], value);
                            assert!(values.insert(k.clone(), v).is_none(), "{k} twice");
                        }
                    }
                }
            }
        }
    }
    Expected { values, forms }
}

/// The canonical form of `value` for its item's type, as docs/protocols.md ("Item types and
/// stored values") defines it, over the types `study from-odm` gives each ODM DataType:
fn canonical(item: &ItemType, value: &str) -> String {
    match (item.data_type.as_str(), item.code_type.as_deref()) {
        // boolean: `true` or `false`; REDCap writes checkboxes and yes/no items as 1 and 0.
        ("boolean", _) => match value {
            "1" | "true" => "true".into(),
            "0" | "false" => "false".into(),
            other => panic!("oracle: no boolean rule for {other:?}"),
        },
        // integer, and integer codes: the number, without sign or leading zeros (`7` for `007`).
        ("integer", _) | (_, Some("integer")) => value.parse::<i64>().unwrap().to_string(),
        // float and double (decimal), and their codes: an integral value as an integer (`37` for
        // `37.0`), else the shortest form (`36.8` for `36.80`): Rust's `{}` of an f64 is the
        // shortest text that reads back as the same number.
        ("float" | "double", _) | (_, Some("float" | "double")) => {
            let x: f64 = value.parse().unwrap();
            if x.fract() == 0.0 && x.abs() < 1e15 {
                format!("{}", x as i64)
            } else {
                format!("{x}")
            }
        }
        // date: `YYYY-MM-DD` (these files write every date so already).
        ("date", _) => {
            assert!(
                value.len() == 10 && value.as_bytes()[4] == b'-' && value.as_bytes()[7] == b'-',
                "oracle: no rule for the date {value:?}"
            );
            value.into()
        }
        // text and string, and their codes: as given.
        ("text" | "string", None | Some("text" | "string")) => value.into(),
        (t, c) => panic!("oracle: no canonical rule for DataType {t} (code list {c:?})"),
    }
}
