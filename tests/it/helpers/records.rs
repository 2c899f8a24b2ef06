//! Records for tests: the documented example and generated ones.

/// The documented example record, with a fresh record id.
pub fn record(form_items: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"schema": "edc.crf.v1", "record_id": uuid::Uuid::new_v4().to_string(), "version": 1,
        "study": "DEMO-001", "site": "SITE-03", "subject": "DEMO-001-03-0042", "visit": "WEEK4",
        "form": "VS", "captured_at": "2026-11-20T10:15:00Z", "entered_by": "crc-17",
        "batch": {"id": "b1f2c3d4-0000-4000-8000-000000000001", "size": 1000},
        "identifiers": {"full_name": "Ada Lovelace", "birth_date": "1961-03-02", "phone": "+44 20 7946 0000",
            "national_id": "QQ 12 34 56 C", "mrn": "MRN-778899", "address": "12 Example Road, London",
            "email": "ada@example.org"},
        "items": form_items})
}

pub fn vs_items() -> serde_json::Value {
    serde_json::json!({"SYSBP": 128, "DIABP": 82, "PULSE": 71, "TEMP": 36.8, "VSDAT": "2026-11-20"})
}

pub fn bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Generated records, as the `generate` command makes them.
pub fn generated(count: usize, seed: u64, invalid: f64, queried: f64) -> Vec<String> {
    let opts = edc_ingest::tools::generate::Options {
        count,
        seed,
        invalid_ratio: invalid,
        queried_ratio: queried,
        duplicate_ratio: 0.0,
        batch_size: 500,
    };
    let mut out = Vec::new();
    edc_ingest::tools::generate::generate(&opts, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}
