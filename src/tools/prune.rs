//! `edc-ingest prune`: removes what the retention settings (or the command's own horizons) say from
//! the data that is not evidence (see `store::retention`). A horizon under one day is refused
//! (exit code 2) before anything connects.

use std::time::Duration;

use crate::config::{Settings, check_retention};
use crate::failure::{Failure, runtime};
use crate::store::{self, retention::Horizons};

/// The command's own horizons; each overrides its setting.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// `--older-than`: the working tables (else `retention.working_tables`).
    pub older_than: Option<Duration>,
    /// `--parked-older-than`: `outbox_parked` (else `retention.outbox_parked`).
    pub parked_older_than: Option<Duration>,
}

/// The horizons to prune by, checked: at least one, none under one day.
pub fn horizons(settings: &Settings, opts: Options) -> Result<Horizons, Failure> {
    let horizons = Horizons {
        working_tables: opts.older_than.or(settings.retention.working_tables),
        outbox_parked: opts.parked_older_than.or(settings.retention.outbox_parked),
    };
    if !horizons.any() {
        return Err(Failure::setup(
            "prune needs --older-than (or retention.working_tables in the settings), or \
             --parked-older-than (or retention.outbox_parked)",
        ));
    }
    for (what, given, setting) in [
        ("--older-than", opts.older_than, horizons.working_tables),
        (
            "--parked-older-than",
            opts.parked_older_than,
            horizons.outbox_parked,
        ),
    ] {
        if let Some(h) = setting {
            // A setting was checked when the settings were loaded; name what was given.
            let name = if given.is_some() {
                what
            } else {
                "the retention setting"
            };
            check_retention(name, h)?;
        }
    }
    Ok(horizons)
}

/// Prunes, as the role of `postgres.url`, and says what was removed.
pub async fn prune(settings: &Settings, opts: Options) -> Result<String, Failure> {
    let horizons = horizons(settings, opts)?;
    let pg = &settings.postgres;
    let db = store::connect(&pg.url, pg).await.map_err(runtime)?;
    let pruned = store::retention::prune(&db.client, horizons).await;
    db.close().await;
    let pruned = pruned.map_err(runtime)?;
    Ok(format!("pruned {}: {pruned}", horizons.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &[(&str, &str)]) -> Settings {
        let mut vars = vec![("EDC__DEV_INSECURE_PSEUDONYM_KEY", "true")];
        vars.extend_from_slice(extra);
        Settings::load_with_env(
            None,
            vars.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap()
    }

    #[test]
    fn horizons_come_from_the_command_else_the_settings_and_none_is_under_a_day() {
        let day = Duration::from_secs(86_400);
        let none = settings(&[]);
        let err = horizons(&none, Options::default()).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--older-than"), "{err}");
        for short in [Duration::from_millis(1), day - Duration::from_secs(1)] {
            for opts in [
                Options {
                    older_than: Some(short),
                    ..Options::default()
                },
                Options {
                    older_than: Some(30 * day),
                    parked_older_than: Some(short),
                },
            ] {
                let err = horizons(&none, opts).unwrap_err();
                assert_eq!(err.exit_code(), 2, "{opts:?}");
                assert!(err.to_string().contains("at least one day"), "{err}");
            }
        }
        let set = settings(&[
            ("EDC__RETENTION__WORKING_TABLES", "30days"),
            ("EDC__RETENTION__OUTBOX_PARKED", "90days"),
        ]);
        let h = horizons(
            &set,
            Options {
                older_than: Some(7 * day),
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(h.working_tables, Some(7 * day));
        assert_eq!(h.outbox_parked, Some(90 * day));
    }
}
