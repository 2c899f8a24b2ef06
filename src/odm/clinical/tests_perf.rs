//! Throughput and memory of the ClinicalData reader on a large generated file. Ignored by default
//! (it writes 165 MB to a temporary directory); run it in release mode:
//! `cargo test --release --all-features --lib odm::clinical::tests_perf -- --ignored --nocapture`
//! (`ODM_PERF_MB` sets the large file's size).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use super::*;
use crate::odm::xml::ODM13_NS;

/// Writes about `mb` MB of ODM: subjects of 4 events of 3 forms of one group of 6 items, with
/// AuditRecords, vendor attributes and the shapes of real exports. Returns the forms written.
fn generate(path: &Path, mb: u64) -> u64 {
    let mut out = BufWriter::new(File::create(path).unwrap());
    writeln!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ODM xmlns=\"{ODM13_NS}\" xmlns:redcap=\"https://projectredcap.org\" FileType=\"Snapshot\" FileOID=\"F.1\" ODMVersion=\"1.3.2\" CreationDateTime=\"2024-01-01T00:00:00\">\n<ClinicalData StudyOID=\"ST.PERF\" MetaDataVersionOID=\"MDV.1\">"
    )
    .unwrap();
    let (mut written, mut forms, mut subject) = (0u64, 0u64, 0u64);
    while written < mb * 1024 * 1024 {
        subject += 1;
        let mut s = format!(
            "<SubjectData SubjectKey=\"SUBJ-{subject:07}\" redcap:RecordIdField=\"record_id\">\n<SiteRef LocationOID=\"SITE.{}\"/>\n",
            subject % 40
        );
        for event in 1..=4 {
            s.push_str(&format!(
                "<StudyEventData StudyEventOID=\"SE.VISIT{event}\">\n"
            ));
            for form in 1..=3 {
                forms += 1;
                s.push_str(&format!(
                    "<FormData FormOID=\"F.FORM{form}\" redcap:Complete=\"2\">\n<AuditRecord><UserRef UserOID=\"U.{}\"/><LocationRef LocationOID=\"SITE.1\"/><DateTimeStamp>2024-03-0{event}T10:00:00Z</DateTimeStamp></AuditRecord>\n<ItemGroupData ItemGroupOID=\"IG.FORM{form}\" ItemGroupRepeatKey=\"1\">\n",
                    subject % 7
                ));
                s.push_str(&format!(
                    "<ItemData ItemOID=\"I.WEIGHT\" Value=\"{}.5\"><MeasurementUnitRef MeasurementUnitOID=\"MU.KG\"/></ItemData>\n<ItemData ItemOID=\"I.DATE\" Value=\"2024-03-0{event}\"/>\n<ItemDataInteger ItemOID=\"I.PULSE\">{}</ItemDataInteger>\n<ItemData ItemOID=\"I.YN\" Value=\"1\"/>\n<ItemData ItemOID=\"I.COMMENT\" Value=\"Patient reports &lt;mild&gt; pain&#10;since Monday\"/>\n<ItemData ItemOID=\"I.MISSING\" IsNull=\"Yes\"/>\n",
                    50 + subject % 50,
                    60 + form
                ));
                s.push_str("</ItemGroupData>\n</FormData>\n");
            }
            s.push_str("</StudyEventData>\n");
        }
        s.push_str("</SubjectData>\n");
        out.write_all(s.as_bytes()).unwrap();
        written += s.len() as u64;
    }
    writeln!(out, "</ClinicalData>\n</ODM>").unwrap();
    forms
}

/// The process's peak resident memory so far, in kB (VmHWM).
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The CPU time this thread has run, in seconds (the machine may be shared: wall time alone would
/// measure the neighbours too).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    stat.split_whitespace()
        .next()
        .unwrap()
        .parse::<f64>()
        .unwrap()
        / 1e9
}

/// Reads the file; returns (forms, items, wall seconds, CPU seconds).
fn read(path: &Path) -> (u64, u64, f64, f64) {
    let started = Instant::now();
    let cpu = cpu_seconds();
    let input = BufReader::with_capacity(64 * 1024, File::open(path).unwrap());
    let mut reader = ClinicalReader::new(input, Limits::default());
    let (mut forms, mut items) = (0, 0);
    for form in reader.by_ref() {
        let form = form.unwrap();
        forms += 1;
        items += form.items.len() as u64;
    }
    assert_eq!(reader.summary().refused, 0);
    (
        forms,
        items,
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu,
    )
}

#[test]
#[ignore = "writes 165 MB; run in release mode with --ignored"]
fn throughput_and_flat_memory_on_a_large_file() {
    let dir = tempfile::tempdir().unwrap();
    let large_mb = std::env::var("ODM_PERF_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let mut peaks = Vec::new();
    for mb in [15, large_mb] {
        let path = dir.path().join(format!("perf-{mb}.xml"));
        let written = generate(&path, mb);
        let size = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
        let (forms, items, secs, cpu) = read(&path);
        assert_eq!(forms, written);
        let peak = peak_rss_kb();
        peaks.push(peak);
        println!(
            "{size:.1} MB: {forms} forms, {items} items in {secs:.2} s ({cpu:.2} s of CPU): {:.0} MB/s, {:.0} forms/s; {:.0} MB/s and {:.0} forms/s of CPU time; peak RSS {peak} kB",
            size / secs,
            forms as f64 / secs,
            size / cpu,
            forms as f64 / cpu
        );
        std::fs::remove_file(&path).unwrap();
        // A floor against a pathological regression (quadratic work, a copy per byte), not the
        // figure itself, which BENCHMARKS.md gives: far below what release builds do.
        if !cfg!(debug_assertions) {
            assert!(size / cpu > 30.0, "{:.0} MB/s of CPU time", size / cpu);
        }
    }
    // Ten times the file, the same memory: the peak after the large file is within 8 MB of the
    // peak after the small one.
    assert!(peaks[1] < peaks[0] + 8 * 1024, "{peaks:?}");
}
