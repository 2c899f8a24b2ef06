//! Test-only fault triggers, compiled in only with the `fault-injection` feature (never in release
//! builds). A body whose `entered_by` is one of the markers below makes its job fail on purpose.

/// Makes the job panic: tests that a panic is dead-lettered and the worker lives on.
pub const PANIC_MARKER: &str = "edc-fault-panic";
/// Aborts the whole process: tests crash-loop protection.
pub const ABORT_MARKER: &str = "edc-fault-abort";

pub fn inject(body: &[u8]) {
    let has = |marker: &str| {
        let needle = format!("\"entered_by\":\"{marker}\"");
        body.windows(needle.len()).any(|w| w == needle.as_bytes())
    };
    if has(PANIC_MARKER) {
        panic!("fault injection: a deliberate panic");
    }
    if has(ABORT_MARKER) {
        std::process::abort();
    }
}
