//! Every committed corpus file (`fuzz/corpus/TARGET/*`: the seeds made from the test data, what
//! the fuzzer kept, and each crash it found, fixed since) replayed through its target's harness:
//! what CI runs on stable.

use std::path::{Path, PathBuf};

use super::{SEPARATOR, TARGETS, run};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn files(target: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(corpus(target))
        .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Each file of each target, in turn; a failure names the file.
#[test]
fn every_committed_corpus_file_passes_its_target() {
    let mut ran = 0;
    for target in TARGETS {
        let all = files(target);
        assert!(!all.is_empty(), "fuzz/corpus/{target} is empty");
        for path in all {
            let data = std::fs::read(&path).unwrap();
            let replay = std::panic::catch_unwind(|| run(target, &data));
            assert!(replay.is_ok(), "{} fails its target", path.display());
            ran += 1;
        }
    }
    assert!(ran >= TARGETS.len());
}

/// Each target of `fuzz/fuzz_targets/` is a harness here, and the other way round.
#[test]
fn the_fuzz_crate_has_one_target_per_harness() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    let mut want: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
}

#[test]
fn the_input_helpers_split_and_tell_distinctive_values() {
    assert!(super::distinctive("Lovelacé"));
    assert!(!super::distinctive("a` is missing, a long plain value"));
    assert!(!super::distinctive("DEMO-001"));
    assert!(!super::distinctive("0123456789abcdef0123"));
    let p = super::parts(b"a\n%%\nb\n%%\nc", 2);
    assert_eq!(p, vec![&b"a"[..], &b"b\n%%\nc"[..]]);
    assert_eq!(super::parts(b"abc", 3), vec![&b"abc"[..]]);
    assert_eq!(SEPARATOR, b"\n%%\n");
}

/// The seeds reach the oracles: their records are accepted, their forms read, mapped and written.
#[test]
fn the_seeds_reach_the_oracles() {
    use crate::odm::clinical::ClinicalReader;
    use crate::odm::xml::Limits;
    let accepted = files("crf_body")
        .iter()
        .filter(|seed| {
            let body = std::fs::read(seed).unwrap();
            let (r, p) = (super::demo_registry(), super::pseudonymizer());
            crate::pipeline::prepare(&body, super::MAX_BODY, r, p).is_ok()
        })
        .count();
    assert!(accepted >= 3, "{accepted} crf_body seeds accepted");
    let doc = std::fs::read(corpus("odm_clinical").join("seed-import")).unwrap();
    let forms: Vec<_> = ClinicalReader::new(&doc[..], Limits::default())
        .flatten()
        .collect();
    assert!(forms.len() >= 3);
    let mapped = forms
        .iter()
        .filter(|f| {
            crate::pipeline::odm::map(f, super::odm_registry(), super::pseudonymizer()).is_ok()
        })
        .count();
    assert!(mapped >= 3, "{mapped} forms mapped");
    assert!(forms.iter().all(|f| crate::odm::write::write(f).is_ok()));
}

/// The seeds that are not copies of a test data file: `cargo test --lib write_seeds -- --ignored`
/// writes them again (each target's `seed-*` files).
#[test]
#[ignore]
fn write_seeds() {
    super::seeds::write_all(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus"));
}
