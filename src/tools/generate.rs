//! `edc-ingest generate`: realistic synthetic DEMO-001 records as NDJSON, reproducible from a seed.
//!
//! Every record carries (fake) identifiers. A share of them is out of range or breaks an edit check
//! (stored as `queried`), a share is invalid (dead-lettered as `invalid` or `malformed`), and a share
//! repeats an earlier line byte for byte (recognised as a duplicate).

use std::io::Write;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use uuid::Uuid;

use super::progress::Progress;

#[derive(Clone, Debug)]
pub struct Options {
    pub count: usize,
    pub seed: u64,
    pub invalid_ratio: f64,
    pub queried_ratio: f64,
    pub duplicate_ratio: f64,
    pub batch_size: usize,
}

const FIRST: [&str; 12] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Niklaus", "Margaret", "Ken",
    "Radia", "John",
];
const LAST: [&str; 12] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Wirth", "Hamilton",
    "Thompson", "Perlman", "Backus",
];
const SITES: [&str; 3] = ["SITE-01", "SITE-02", "SITE-03"];
const VISITS: [&str; 4] = ["SCREENING", "BASELINE", "WEEK4", "WEEK12"];
const SEVERITIES: [&str; 3] = ["MILD", "MODERATE", "SEVERE"];
const AE_TERMS: [&str; 6] = [
    "Headache",
    "Nausea",
    "Fatigue",
    "Dizziness",
    "Rash",
    "Insomnia",
];

fn uuid(rng: &mut StdRng) -> Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

/// One valid record (before any deliberate damage).
fn record(rng: &mut StdRng, batch: &Value) -> Value {
    let site_no = rng.random_range(1..=3);
    let subject = format!("DEMO-001-{site_no:02}-{:04}", rng.random_range(1..=400));
    let first = FIRST[rng.random_range(0..FIRST.len())];
    let last = LAST[rng.random_range(0..LAST.len())];
    let day = rng.random_range(1..=26);
    let form = match rng.random_range(0..10) {
        0..=5 => "VS",
        6..=7 => "LB",
        _ => "AE",
    };
    let items = match form {
        "VS" => {
            let sys = rng.random_range(100..=150);
            json!({"SYSBP": sys, "DIABP": rng.random_range(60..=95), "PULSE": rng.random_range(55..=95),
                   "TEMP": (rng.random_range(360..=378) as f64) / 10.0, "VSDAT": format!("2026-11-{day:02}")})
        }
        "LB" => {
            json!({"HGB": (rng.random_range(110..=170) as f64) / 10.0, "WBC": (rng.random_range(40..=110) as f64) / 10.0,
                   "PLT": rng.random_range(150..=400), "CREAT": (rng.random_range(6..=13) as f64) / 10.0,
                   "LBDAT": format!("2026-11-{day:02}"), "LBCOM": format!("Sample reviewed with {first} {last}")})
        }
        _ => json!({"AETERM": AE_TERMS[rng.random_range(0..AE_TERMS.len())],
                   "AESER": if rng.random_bool(0.1) { "Y" } else { "N" },
                   "AESEV": SEVERITIES[rng.random_range(0..3)],
                   "AESTDAT": format!("2026-11-{day:02}")}),
    };
    json!({
        "schema": "edc.crf.v1",
        "record_id": uuid(rng).to_string(),
        "version": 1,
        "study": "DEMO-001",
        "site": SITES[site_no - 1],
        "subject": subject,
        "visit": VISITS[rng.random_range(0..VISITS.len())],
        "form": form,
        "captured_at": format!("2026-11-{day:02}T{:02}:{:02}:00Z", rng.random_range(7..18), rng.random_range(0..60)),
        "entered_by": format!("crc-{:02}", rng.random_range(1..=20)),
        "batch": batch,
        "identifiers": {
            "full_name": format!("{first} {last}"),
            "birth_date": format!("{}-{:02}-{:02}", rng.random_range(1930..=2004), rng.random_range(1..=12), rng.random_range(1..=28)),
            "phone": format!("+44 20 7946 {:04}", rng.random_range(0..10000)),
            "national_id": format!("QQ {:02} {:02} {:02} C", rng.random_range(0..100), rng.random_range(0..100), rng.random_range(0..100)),
            "mrn": format!("MRN-{:06}", rng.random_range(0..1_000_000)),
            "address": format!("{} Example Road, London", rng.random_range(1..200)),
            "email": format!("{}.{}@example.org", first.to_lowercase(), last.to_lowercase()),
        },
        "items": items,
    })
}

/// Makes a record fail a soft check (stored as `queried`).
fn make_queried(rng: &mut StdRng, v: &mut Value) {
    let form = v["form"].as_str().unwrap_or_default().to_string();
    let items = &mut v["items"];
    match form.as_str() {
        "VS" => match rng.random_range(0..3) {
            0 => items["SYSBP"] = json!(rng.random_range(251..=300)),
            1 => items["DIABP"] = json!(items["SYSBP"].as_i64().unwrap_or(120) + 5),
            _ => {
                items.as_object_mut().map(|m| m.remove("VSDAT"));
            }
        },
        "LB" => items["HGB"] = json!(25.5),
        _ => items["AESER"] = json!("U"),
    }
}

/// Makes a record structurally invalid (or not JSON at all): dead-lettered.
fn damage(rng: &mut StdRng, v: &mut Value) -> Option<String> {
    match rng.random_range(0..6) {
        0 => v["site"] = json!("SITE-99"),
        1 => v["items"]["BOGUS"] = json!(1),
        2 => {
            let first = v["items"]
                .as_object()
                .and_then(|m| m.keys().next().cloned());
            if let Some(k) = first {
                v["items"][k] = json!("not-a-value-of-its-type");
            }
        }
        3 => {
            v.as_object_mut().map(|m| m.remove("captured_at"));
        }
        4 => v["record_id"] = json!("not-a-uuid"),
        _ => {
            let text = v.to_string();
            return Some(text[..text.len() / 2].to_string()); // truncated: malformed JSON
        }
    }
    None
}

pub fn generate(opts: &Options, out: &mut impl Write) -> std::io::Result<()> {
    generate_with_progress(opts, out, &Progress::hidden())
}

/// As [`generate`], counting each line written on `progress`.
pub fn generate_with_progress(
    opts: &Options,
    out: &mut impl Write,
    progress: &Progress,
) -> std::io::Result<()> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut written: Vec<String> = Vec::new();
    let mut batch =
        json!({"id": uuid(&mut rng).to_string(), "size": opts.batch_size.min(opts.count)});
    let mut in_batch = 0;
    for i in 0..opts.count {
        if in_batch == opts.batch_size {
            let left = opts.count - i;
            batch = json!({"id": uuid(&mut rng).to_string(), "size": opts.batch_size.min(left)});
            in_batch = 0;
        }
        in_batch += 1;
        progress.inc(1);
        if !written.is_empty() && rng.random_bool(opts.duplicate_ratio.clamp(0.0, 1.0)) {
            let again = written[rng.random_range(0..written.len())].clone();
            writeln!(out, "{again}")?;
            continue;
        }
        let mut v = record(&mut rng, &batch);
        let line = if rng.random_bool(opts.invalid_ratio.clamp(0.0, 1.0)) {
            damage(&mut rng, &mut v).unwrap_or_else(|| v.to_string())
        } else {
            if rng.random_bool(opts.queried_ratio.clamp(0.0, 1.0)) {
                make_queried(&mut rng, &mut v);
            }
            v.to_string()
        };
        writeln!(out, "{line}")?;
        if written.len() < 10_000 {
            written.push(line);
        }
    }
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_records() {
        let opts = Options {
            count: 50,
            seed: 7,
            invalid_ratio: 0.1,
            queried_ratio: 0.1,
            duplicate_ratio: 0.05,
            batch_size: 20,
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate(&opts, &mut a).unwrap();
        generate(&opts, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(String::from_utf8(a).unwrap().lines().count(), 50);
    }
}
