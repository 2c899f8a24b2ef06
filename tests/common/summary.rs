//! Reading the daemon's summary line (`edc-ingest stopped after ...: accepted=N ... acks=N`), for the
//! integration tests, the chaos suite and the benchmark alike (each includes this file with `#[path]`).

/// The count `name=N` in a summary line; None if the line has no such field.
pub fn summary_field(summary: &str, name: &str) -> Option<u64> {
    let at = summary.find(&format!(" {name}="))? + name.len() + 2;
    let digits = summary[at..].split(|c: char| !c.is_ascii_digit()).next()?;
    Some(
        digits
            .parse()
            .unwrap_or_else(|_| panic!("a count after {name}= in {summary}")),
    )
}
