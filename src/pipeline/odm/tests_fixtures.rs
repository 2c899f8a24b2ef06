//! The mapping of whole files (tests/data/odm/map-*.xml against map-study-*.yaml): a Snapshot
//! export form by form, its record ids across re-exports, and one form inserted, corrected, fed,
//! given as context and withdrawn, applied in turn, with the import report's counts.

use serde_json::{Value, json};

use super::tests::{document, fixture, key, map_all, refused, snapshot};
use super::*;
use crate::odm::model::TransactionType as Tx;

#[test]
fn a_snapshot_export_maps_form_by_form() {
    let forms: Vec<OdmForm> = map_all(&fixture("map-snapshot.xml"))
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    assert_eq!(forms.len(), 4);

    let vs = &forms[0];
    assert_eq!(
        (vs.site.as_str(), vs.subject.as_str(), vs.visit.as_str()),
        ("SITE 02", "1001", "SE.VISIT 1")
    );
    assert_eq!(
        vs.record_id,
        key("ST.MAP", "1001", "SE.VISIT 1", "F.VS").record_id()
    );
    assert_eq!(vs.captured_at.to_rfc3339(), "2024-03-02T08:30:00+01:00");
    assert_eq!(vs.captured_from, CaptureSource::FormAudit);
    assert_eq!(vs.entered_by, "U.NURSE");
    assert_eq!(vs.protocol.version, "MDV.1");
    assert_eq!(
        Value::Object(snapshot(vs).clone()),
        json!({
            "I.VSDAT": "2024-03-02", "I.WEIGHT": 72.5, "I.PULSE": 64, "I.TEMP": null,
            "I.NOTE": " two lines ", "I.DONE": true, "I.POS": "1", "I.ARM": " A",
            "I.TIME": "08:30:00", "I.ONSET": "2024-03"
        })
    );

    let ae = &forms[1];
    assert_eq!(ae.captured_from, CaptureSource::ItemAudit);
    assert_eq!(ae.captured_at.to_rfc3339(), "2024-03-05T10:00:00+00:00");
    assert_eq!(ae.entered_by, "U.INV2");
    assert_eq!(ae.reason_for_change.as_deref(), Some("late entry"));
    assert_eq!(
        Value::Object(snapshot(ae).clone()),
        json!({
            "I.AEYN": true,
            "IG.AELOG": {
                "1": {"I.AETERM": "Headache", "I.AESTDAT": "2024-03", "I.AESEV": "2"},
                "2": {"I.AETERM": "Nausea"}
            },
            "IG.CMLOG": {"1": {"I.CMTRT": "Paracetamol", "I.CMDOSE": 500}}
        })
    );

    // No SiteRef, no event: the study's defaults; no AuditRecord: AsOfDateTime; nobody named.
    let (first, second) = (&forms[2], &forms[3]);
    for f in [first, second] {
        assert_eq!(
            (f.site.as_str(), f.visit.as_str()),
            ("SITE.01", "SE.SCREEN")
        );
        assert_eq!(f.captured_from, CaptureSource::AsOf);
        assert_eq!(f.captured_at.to_rfc3339(), "2024-05-09T18:00:00+00:00");
        assert_eq!(f.entered_by, UNKNOWN_USER);
        assert_eq!(f.visit_repeat, "1");
    }
    assert_eq!(
        (first.form_repeat.as_str(), second.form_repeat.as_str()),
        ("1", "2")
    );
    assert_ne!(
        first.record_id, second.record_id,
        "two repeats, two records"
    );
    assert_eq!(
        first.record_id,
        key("ST.MAP", "1002", "SE.SCREEN", "F.VS").record_id()
    );
}

#[test]
fn the_same_file_read_twice_names_the_same_records() {
    let ids = |xml: &str| -> Vec<Uuid> {
        map_all(xml)
            .into_iter()
            .map(|r| r.unwrap().record_id)
            .collect()
    };
    let xml = fixture("map-snapshot.xml");
    assert_eq!(ids(&xml), ids(&xml));
    // Re-exported later, with other audit details and another file date: the same records.
    let later = xml
        .replace("2024-05-09T18:00:00", "2024-06-01T00:00:00")
        .replace("U.NURSE", "U.OTHER");
    assert_eq!(ids(&xml), ids(&later));
}

#[test]
fn a_form_inserted_corrected_fed_shown_and_withdrawn() {
    let forms: Vec<OdmForm> = map_all(&fixture("map-transactions.xml"))
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(forms.len(), 5);
    assert!(
        forms.iter().all(|f| f.record_id == forms[0].record_id),
        "one record throughout"
    );
    let kinds: Vec<&str> = forms.iter().map(|f| f.delta.kind()).collect();
    assert_eq!(kinds, ["snapshot", "merge", "merge", "context", "remove"]);
    let mut state = Value::Null;
    let mut states = Vec::new();
    for f in &forms {
        state = apply(&state, &f.delta);
        states.push(state.clone());
    }
    let after_correction = json!({"I.AEYN": true, "IG.AELOG": {
        "1": {"I.AETERM": "Headache", "I.AESTDAT": "2024-03-02"}, "3": {"I.AETERM": "Rash"}}});
    assert_eq!(
        states,
        [
            json!({"I.AEYN": true, "IG.AELOG": {"1": {"I.AETERM": "Headache", "I.AESTDAT": "2024-03"}, "2": {"I.AETERM": "Nausea"}}}),
            after_correction,
            json!({"I.AEYN": false, "IG.AELOG": {"1": {"I.AETERM": "Headache"}, "3": {"I.AETERM": "Rash"}}}),
            json!({"I.AEYN": false, "IG.AELOG": {"1": {"I.AETERM": "Headache"}, "3": {"I.AETERM": "Rash"}}}),
            json!({}),
        ]
    );
    let who: Vec<(&str, CaptureSource)> = forms
        .iter()
        .map(|f| (f.entered_by.as_str(), f.captured_from))
        .collect();
    assert_eq!(
        who,
        [
            ("U.1", CaptureSource::FormAudit),
            ("U.2", CaptureSource::FormAudit),
            ("U.3", CaptureSource::ItemAudit),
            ("U.3", CaptureSource::FormAudit),
            ("U.4", CaptureSource::FormAudit)
        ]
    );
    assert_eq!(
        forms[1].reason_for_change.as_deref(),
        Some("Data correction based on patient chart")
    );
    assert_eq!(
        forms[4].reason_for_change.as_deref(),
        Some("entered for the wrong subject")
    );
    let txs: Vec<Option<Tx>> = forms.iter().map(|f| f.transaction).collect();
    assert_eq!(
        txs,
        [
            Some(Tx::Insert),
            Some(Tx::Update),
            None,
            Some(Tx::Context),
            Some(Tx::Remove)
        ]
    );
    // The counts of the import report.
    let mut tally = Tally::default();
    for f in map_all(&fixture("map-transactions.xml")) {
        tally.add(&f);
    }
    tally.add(&Err(refused(&document(
        "Snapshot",
        "ST.NOPE",
        "<SubjectData SubjectKey=\"S\"><FormData FormOID=\"F\"/></SubjectData>",
    ))));
    let counts = serde_json::to_value(&tally).unwrap();
    assert_eq!(
        counts,
        json!({
            "forms": {"ST.MAP": {"F.AE": 5}},
            "actions": {"context": 1, "merge": 2, "remove": 1, "snapshot": 1},
            "transactions": {"Context": 1, "Insert": 1, "Remove": 1, "Update": 1, "none": 1},
            "capture_times": {"form_audit": 4, "item_audit": 1},
            "unreadable_timestamps": 0,
            "refused": {"unknown_study": 1}
        })
    );
    assert_eq!((tally.mapped(), tally.refused_total()), (5, 1));
    let mut twice = tally.clone();
    twice.absorb(&tally);
    assert_eq!(
        (
            twice.mapped(),
            twice.refused_total(),
            twice.actions["merge"]
        ),
        (10, 2, 4)
    );
}
