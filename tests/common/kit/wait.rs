//! The bounded wait: a condition polled until it holds, with a deadline that also bounds a check
//! that hangs (a database that does not answer).

use std::future::Future;
use std::time::Duration;

/// How often a condition is asked again.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `cond` every 50 ms until it holds; fails the test after `within`, saying what it waited
/// for.
pub async fn wait_for<F, Fut>(what: &str, within: Duration, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if let Err(e) = try_wait_for(what, within, cond).await {
        panic!("{e}");
    }
}

/// As [`wait_for`], returning the failure instead: "timed out after ... waiting for: `what`".
pub async fn try_wait_for<F, Fut>(what: &str, within: Duration, mut cond: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    let timed_out = || format!("timed out after {within:?} waiting for: {what}");
    loop {
        // One check may not outlast the deadline either (a little slack so that a check started
        // just before it can still answer).
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left.max(Duration::from_secs(1)), cond()).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(_) => return Err(format!("{} (a check did not answer)", timed_out())),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(timed_out());
        }
        tokio::time::sleep(POLL).await;
    }
}
