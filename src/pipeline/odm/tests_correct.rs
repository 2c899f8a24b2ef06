//! The next version of a record ([`correct::next`]) against its latest stored one: what is
//! unchanged stores nothing, a merge keeps the stored pseudonyms as they are, a removal withdraws
//! what is stored and nothing else.

use serde_json::Value;

use super::correct::{Latest, Next, next};
use super::tests::{in_file, mapped};
use crate::pipeline::Pseudonymizer;

const AE_ROWS: &str = r#"<ItemGroupData ItemGroupOID="IG.AELOG" ItemGroupRepeatKey="1">
  <ItemData ItemOID="I.AETERM" Value="Headache"/><ItemData ItemOID="I.AESEV" Value="2"/>
</ItemGroupData>
<ItemGroupData ItemGroupOID="IG.AELOG" ItemGroupRepeatKey="2">
  <ItemData ItemOID="I.AETERM" Value="Nausea"/>
</ItemGroupData>"#;

/// What `xml`'s one form comes to against `latest`: the stored version, or None if unchanged.
fn decide(xml: &str, latest: Option<&Latest>) -> Option<(Latest, bool)> {
    match next(&mapped(xml), latest, &Pseudonymizer::insecure_dev()).unwrap() {
        Next::Unchanged => None,
        Next::Store { record, removed } => Some((
            Latest {
                version: record.version,
                status: if removed {
                    "removed".into()
                } else {
                    record.status.as_str().into()
                },
                items: record.items,
            },
            removed,
        )),
    }
}

#[test]
fn a_merge_keeps_stored_pseudonyms_and_the_same_content_again_stores_nothing() {
    let (v1, _) = decide(&in_file("Snapshot", "F.AE", "", AE_ROWS), None).unwrap();
    assert_eq!(v1.version, 1);
    let term = |v: &Latest, row: &str| v.items["IG.AELOG"][row]["I.AETERM"].clone();
    let first = term(&v1, "1");
    assert!(first.as_str().unwrap().starts_with("psn:"), "{first}");
    assert!(!v1.items.to_string().contains("Headache"));

    // An Update of row 1's severity: row 1's term and row 2 as stored, pseudonyms not re-keyed.
    let severe = r#"<ItemGroupData ItemGroupOID="IG.AELOG" ItemGroupRepeatKey="1">
      <ItemData ItemOID="I.AESEV" Value="3"/></ItemGroupData>"#;
    let update = in_file(
        "Transactional",
        "F.AE",
        r#" TransactionType="Update""#,
        severe,
    );
    let (v2, removed) = decide(&update, Some(&v1)).unwrap();
    assert!(!removed);
    assert_eq!((v2.version, v2.status.as_str()), (2, "accepted"));
    assert_eq!(term(&v2, "1"), first);
    assert_eq!(v2.items["IG.AELOG"]["1"]["I.AESEV"], "3");
    assert_eq!(v2.items["IG.AELOG"]["2"], v1.items["IG.AELOG"]["2"]);

    // The same update again, and the first snapshot against itself: nothing.
    assert!(decide(&update, Some(&v2)).is_none());
    assert!(decide(&in_file("Snapshot", "F.AE", "", AE_ROWS), Some(&v1)).is_none());

    // A new value of a phi item is keyed again: another pseudonym.
    let renamed = AE_ROWS.replace("Headache", "Migraine");
    let (v3, _) = decide(&in_file("Snapshot", "F.AE", "", &renamed), Some(&v2)).unwrap();
    assert_eq!(v3.version, 3);
    assert_ne!(term(&v3, "1"), first);
}

#[test]
fn remove_withdraws_what_is_stored_and_context_changes_nothing() {
    let remove = in_file("Transactional", "F.AE", r#" TransactionType="Remove""#, "");
    let context = in_file("Transactional", "F.AE", r#" TransactionType="Context""#, "");
    assert!(
        decide(&remove, None).is_none(),
        "nothing stored, nothing to remove"
    );
    assert!(decide(&context, None).is_none());

    let (v1, _) = decide(&in_file("Snapshot", "F.AE", "", AE_ROWS), None).unwrap();
    assert!(decide(&context, Some(&v1)).is_none());
    let (v2, removed) = decide(&remove, Some(&v1)).unwrap();
    assert!(removed);
    assert_eq!((v2.version, v2.status.as_str()), (2, "removed"));
    assert_eq!(v2.items, Value::Object(Default::default()));
    assert!(decide(&remove, Some(&v2)).is_none(), "already removed");

    // The same content as before the removal is stored again: its status is not `removed`.
    let (v3, _) = decide(&in_file("Snapshot", "F.AE", "", AE_ROWS), Some(&v2)).unwrap();
    assert_eq!((v3.version, v3.status.as_str()), (3, "accepted"));
    assert_eq!(v3.items, v1.items);
}

#[test]
fn a_validation_refusal_names_the_form_and_no_value() {
    // The merged state, not the form instance, breaks the protocol: the latest version holds
    // I.PULSE as text (stored when the protocol said otherwise). The reason says where and what,
    // never the value.
    let form = mapped(&in_file(
        "Transactional",
        "F.VS",
        r#" TransactionType="Update""#,
        r#"<ItemGroupData ItemGroupOID="IG.VS"><ItemData ItemOID="I.NOTE" Value="x"/></ItemGroupData>"#,
    ));
    let latest = Latest {
        version: 4,
        items: serde_json::json!({"I.PULSE": "SECRET-77"}),
        status: "accepted".into(),
    };
    let refused = next(&form, Some(&latest), &Pseudonymizer::insecure_dev()).unwrap_err();
    assert_eq!(refused.kind, crate::pipeline::RejectKind::Invalid);
    assert!(
        refused.reason.starts_with("the form at line "),
        "{}",
        refused.reason
    );
    assert!(refused.reason.contains("F.VS"), "{}", refused.reason);
    assert!(!refused.reason.contains("SECRET"), "{}", refused.reason);
    assert_eq!(refused.record_id, Some(form.record_id));
}
