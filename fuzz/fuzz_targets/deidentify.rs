//! See `edc_ingest::fuzzing` for what the target feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| edc_ingest::fuzzing::run("deidentify", data));
