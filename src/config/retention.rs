//! The retention settings (`retention.*`) and the one rule every retention horizon obeys: at least
//! a day.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::parse::optional_duration;

/// How long data that is not evidence is kept. Records, audit rows, data queries, alerts and
/// rejections are never removed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// Prune the working tables (see `store::retention`) of what is older than this, every hour;
    /// none: never (`edc-ingest prune` does it on demand). At least [`MIN_RETENTION`].
    #[serde(deserialize_with = "optional_duration")]
    pub working_tables: Option<Duration>,
    /// Remove the events the broker refused for good (`outbox_parked`) once parked longer than
    /// this, every hour; none (the default): kept until an operator removes them, as each is the
    /// only copy of an event never delivered. At least [`MIN_RETENTION`].
    #[serde(deserialize_with = "optional_duration")]
    pub outbox_parked: Option<Duration>,
}

/// The shortest retention horizon accepted anywhere (settings, `edc-ingest prune`, and the
/// database's prune function itself): shorter ones would forget re-uploads and crash counts still
/// in use, or drop a parked event before anyone could look at it.
pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// Refuses a retention horizon under [`MIN_RETENTION`]; `what` names where it was given.
pub fn check_retention(what: &str, horizon: Duration) -> Result<(), ConfigError> {
    if horizon < MIN_RETENTION {
        return Err(ConfigError::Invalid(format!(
            "{what} is {}: a retention horizon must be at least one day (1day, 24h), so that \
             nothing still in use is pruned",
            show_horizon(horizon)
        )));
    }
    Ok(())
}

/// A horizon as written: whole days as days (`90days`, not humantime's `2months 29days ...`).
pub fn show_horizon(horizon: Duration) -> String {
    let secs = horizon.as_secs();
    match secs / 86_400 {
        1 if secs == 86_400 && horizon.subsec_nanos() == 0 => "1day".to_string(),
        days if days > 0 && secs.is_multiple_of(86_400) && horizon.subsec_nanos() == 0 => {
            format!("{days}days")
        }
        _ => humantime::format_duration(horizon).to_string(),
    }
}
