//! The seed corpora, made from the project's own test data and fixtures (`config/`, `tests/data/`):
//! each target's `seed-*` files under `fuzz/corpus/TARGET/`.

use std::path::Path;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Value, json};

use crate::broker::wire::encode;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

fn body() -> Value {
    json!({"schema": "edc.crf.v1", "record_id": "8a0c6f2e-6b1e-4c55-9d57-0d1f6a1b2c3d", "version": 1,
        "study": "DEMO-001", "site": "SITE-03", "subject": "DEMO-001-03-0042", "visit": "WEEK4",
        "form": "VS", "captured_at": "2026-11-20T10:15:00Z", "entered_by": "crc-17",
        "batch": {"id": "b1f2c3d4-0000-4000-8000-000000000001", "size": 1000},
        "identifiers": {"full_name": "Ada Lovelace", "birth_date": "1961-03-02", "phone": "+44 20 7946 0000",
            "national_id": "QQ 12 34 56 C", "mrn": "MRN-778899", "address": "12 Example Road, London",
            "email": "ada@example.org"},
        "items": {"SYSBP": 128, "DIABP": 82, "PULSE": 71, "TEMP": 36.8, "VSDAT": "2026-11-20"}})
}

fn bodies() -> Vec<Value> {
    let mut ae = body();
    ae["form"] = json!("AE");
    ae["items"] = json!({"AETERM": "headache", "AESER": "Y", "AESTDAT": "2026-11-01", "AEENDAT": "2026-10-01"});
    let mut log = body();
    log["study"] = json!("DEMO-002");
    log["site"] = json!("SITE-01");
    log["visit"] = json!("SE.SCREENING");
    log["form"] = json!("F.AE");
    log["items"] = json!({"I.AEYN": true, "IG.AELOG": {"1": {"I.AETERM": "rash", "I.AESTDAT": "2026-11",
        "I.AESER": false, "I.AESEV": 2}}});
    let mut ex = log.clone();
    ex["form"] = json!("F.EX");
    ex["items"] = json!({"I.EXSTDTC": "2026-11-20T08:00:00Z", "I.EXENDTC": "2026-11-20T07:00:00Z",
        "I.EXTPT": "05:30:00", "I.EXVOL": 600});
    vec![body(), ae, log, ex]
}

fn props(headers: &[(&str, AMQPValue)]) -> BasicProperties {
    let mut t = FieldTable::default();
    for (k, v) in headers {
        t.insert(ShortString::from(*k), v.clone());
    }
    BasicProperties::default()
        .with_message_id("m-1".into())
        .with_content_type("application/json".into())
        .with_reply_to("answers".into())
        .with_correlation_id("c-1".into())
        .with_timestamp(1_799_999_000)
        .with_headers(t)
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn framed(p: &BasicProperties, body: &[u8]) -> Vec<u8> {
    let e = encode(p);
    let mut out = (e.len() as u16).to_be_bytes().to_vec();
    out.extend(e);
    out.extend(body);
    out
}

fn write(dir: &Path, target: &str, name: &str, data: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(format!("seed-{name}")), data).unwrap();
}

pub fn write_all(dir: &Path) {
    for (i, b) in bodies().iter().enumerate() {
        write(
            dir,
            "crf_body",
            &format!("body-{i}.json"),
            &serde_json::to_vec_pretty(b).unwrap(),
        );
        let mut v = vec![i as u8];
        v.extend(serde_json::to_vec(&b["items"]).unwrap());
        write(dir, "validate_cel", &format!("items-{i}"), &v);
    }
    write(dir, "validate_cel", "items-4", &[[4u8].as_slice(), br#"{"I.AEYN": true, "IG.AELOG": [{"I.AETERM": "x", "I.AESTDAT": "2026", "I.AEENDAT": "2025-12", "I.AESER": true}]}"#].concat());
    write(
        dir,
        "validate_cel",
        "items-5",
        &[
            [5u8].as_slice(),
            br#"{"I.EXSTDTC": "2026-11-20T08:00:00+01:00", "I.EXTPT": "23:00", "I.EXFAST": "yes"}"#,
        ]
        .concat(),
    );
    write(dir, "deidentify", "latin", "Ada Lovelace\n+44 20 7946 0000\nQQ 12 34 56 C\nMRN-778899\n12 Example Road\nada@example.org\nheadache\nfasting\nrash".as_bytes());
    write(dir, "deidentify", "unicode", "Zoë Ægir-Øster\n٠١٢٣٤٥٦٧\nＱＱ１２\nmrn\u{200d}42\nStraße 5\nZOË@EXAMPLE.ORG\nmigraine ☂\n\u{202e}note\nrash".as_bytes());
    for (name, file) in [
        ("clinical", "odm/clinical-1.3.2.xml"),
        ("snapshot", "odm/map-snapshot.xml"),
        ("transactions", "odm/map-transactions.xml"),
        ("two-versions", "odm/two-versions.xml"),
        ("import", "odm-import/import.xml"),
    ] {
        write(
            dir,
            "odm_clinical",
            name,
            &std::fs::read(format!("{DATA}/{file}")).unwrap(),
        );
    }
    for (flags, name, file) in [
        (0u8, "cdisc", "odm/cdisc-metadata.xml"),
        (1, "openclinica", "odm/openclinica-metadata.xml"),
        (3, "redcap", "odm/redcap-metadata.xml"),
    ] {
        let mut v = vec![flags];
        v.extend(std::fs::read(format!("{DATA}/{file}")).unwrap());
        write(dir, "study_from_odm", name, &v);
    }
    let studies = concat!(env!("CARGO_MANIFEST_DIR"), "/config/studies");
    for name in ["DEMO-001.yaml", "DEMO-002.yaml"] {
        write(
            dir,
            "protocol_yaml",
            name,
            &std::fs::read(format!("{studies}/{name}")).unwrap(),
        );
    }
    for (name, file) in [
        ("map-v1.yaml", "odm/map-study-v1.yaml"),
        ("import.yaml", "odm-import/ST.IMPORT.yaml"),
    ] {
        write(
            dir,
            "protocol_yaml",
            name,
            &std::fs::read(format!("{DATA}/{file}")).unwrap(),
        );
    }
    let b = serde_json::to_vec(&body()).unwrap();
    let mut death = FieldTable::default();
    death.insert("reason".into(), text("rejected"));
    death.insert("queue".into(), text("edc.records"));
    let deaths = AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)]));
    let seeds = [
        ("plain", props(&[])),
        (
            "batch",
            props(&[
                ("edc-batch-id", text("b1f2c3d4-0000-4000-8000-000000000001")),
                ("edc-batch-size", AMQPValue::LongLongInt(3)),
            ]),
        ),
        (
            "trace",
            props(&[
                (
                    "traceparent",
                    text("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                ),
                ("tracestate", text("a=b")),
                ("timestamp_in_ms", AMQPValue::LongLongInt(1_799_999_000_000)),
            ]),
        ),
        (
            "ours",
            props(&[
                ("x-edc-error-kind", text("invalid")),
                ("x-edc-attempts", AMQPValue::LongInt(2)),
                ("x-edc-seal", text("00")),
                ("x-death", deaths.clone()),
                ("x-delivery-count", AMQPValue::LongInt(1)),
                ("x-edc-queue", text("edc.records")),
            ]),
        ),
    ];
    for (name, p) in &seeds {
        write(dir, "amqp_inbound", name, &framed(p, &b));
        let mut v = vec![1u8];
        v.extend(framed(
            &p.clone()
                .with_user_id("uploader".into())
                .with_expiration("60000".into()),
            &b,
        ));
        write(dir, "dlq_headers", name, &v);
    }
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.yaml");
    let mut c = std::fs::read(config).unwrap();
    c.extend(
        b"\n%%\nEDC__AMQP__URL=amqp://edc:s3cr%C3%A9t-pa55@localhost:5672/%2f\nEDC__WORKERS=4\n",
    );
    write(dir, "config", "default", &c);
    write(dir, "config", "urls", b"postgres:\n  url: postgres://edc:hunter2-long-secret@db/edc\n  migrate_url: postgres://owner:another-long-secret@db/edc\namqp:\n  url: amqp://a:pw-one-long@h1,amqp://b:pw-two-long@h2\n");
}
