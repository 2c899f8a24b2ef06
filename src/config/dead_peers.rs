//! `postgres.dead_peers`: how a peer that vanished without a word is noticed, on both ends of every
//! database connection.
//!
//! A node that loses power, panics or is cut off sends no reset: its connections stay open on the
//! other side until TCP itself gives up, which by default takes about two hours. Meanwhile the
//! server keeps the vanished client's backend, with its locks: the relay's advisory lock among
//! them, so no other replica could relay events. These settings make both ends give up within
//! tens of seconds instead. Each is applied twice: to the daemon's own socket (client side) and,
//! as a session setting of the same meaning, to the server's backend (server side).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::parse::duration;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DeadPeerSettings {
    /// Silence on a connection after which TCP keepalive probes start (`keepalives_idle`; server
    /// side `tcp_keepalives_idle`).
    #[serde(deserialize_with = "duration")]
    pub keepalives_idle: Duration,
    /// Between two unanswered probes (`keepalives_interval`; `tcp_keepalives_interval`).
    #[serde(deserialize_with = "duration")]
    pub keepalives_interval: Duration,
    /// Unanswered probes after which the connection is dropped (`keepalives_retries`;
    /// `tcp_keepalives_count`).
    pub keepalives_count: u32,
    /// The longest data sent may stay unacknowledged before the connection is dropped
    /// (`TCP_USER_TIMEOUT`; `tcp_user_timeout`). Linux only; elsewhere the system's default.
    #[serde(deserialize_with = "duration")]
    pub tcp_user_timeout: Duration,
    /// While a statement runs, the server checks this often that its client is still there, and
    /// ends the statement if not (`client_connection_check_interval`, PostgreSQL 14 and later).
    #[serde(deserialize_with = "duration")]
    pub client_connection_check_interval: Duration,
    /// The relay checks, this often, on its own connection, that it still holds the relay lock;
    /// no answer within this long either ends its turn (see `relay`).
    #[serde(deserialize_with = "duration")]
    pub relay_heartbeat: Duration,
}

impl DeadPeerSettings {
    /// How long an idle connection to a vanished peer lasts at most: the first probe, then every
    /// unanswered one.
    pub fn idle_detection(&self) -> Duration {
        self.keepalives_idle + self.keepalives_interval * self.keepalives_count
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let two_hours = Duration::from_secs(2 * 3600);
        // TCP and the server take these in whole seconds.
        for (key, value) in [
            ("keepalives_idle", self.keepalives_idle),
            ("keepalives_interval", self.keepalives_interval),
        ] {
            if value < Duration::from_secs(1) || value > two_hours || value.subsec_nanos() != 0 {
                return invalid(format!(
                    "postgres.dead_peers.{key} must be whole seconds between 1s and 2h"
                ));
            }
        }
        if !(1..=127).contains(&self.keepalives_count) {
            return invalid(
                "postgres.dead_peers.keepalives_count must be between 1 and 127".into(),
            );
        }
        for (key, value) in [
            ("tcp_user_timeout", self.tcp_user_timeout),
            (
                "client_connection_check_interval",
                self.client_connection_check_interval,
            ),
        ] {
            if value < Duration::from_secs(1) || value > two_hours {
                return invalid(format!(
                    "postgres.dead_peers.{key} must be between 1s and 2h"
                ));
            }
        }
        if self.relay_heartbeat < Duration::from_millis(100)
            || self.relay_heartbeat > Duration::from_secs(300)
        {
            return invalid(
                "postgres.dead_peers.relay_heartbeat must be between 100ms and 5m".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> DeadPeerSettings {
        crate::config::Settings::load_with_env(
            None,
            [("EDC__DEV_INSECURE_PSEUDONYM_KEY".into(), "true".into())],
        )
        .unwrap()
        .postgres
        .dead_peers
    }

    #[test]
    fn the_defaults_give_up_on_a_dead_peer_within_a_minute() {
        let d = defaults();
        assert_eq!(d.validate().ok(), Some(()));
        assert!(d.idle_detection() <= Duration::from_secs(60), "{d:?}");
        assert!(d.tcp_user_timeout <= Duration::from_secs(60), "{d:?}");
        assert!(d.relay_heartbeat < d.idle_detection(), "{d:?}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        type Spoil = fn(&mut DeadPeerSettings);
        let cases: [(&str, Spoil); 5] = [
            ("keepalives_idle", |d| d.keepalives_idle = Duration::ZERO),
            ("keepalives_interval", |d| {
                d.keepalives_interval = Duration::from_millis(1500)
            }),
            ("keepalives_count", |d| d.keepalives_count = 0),
            ("tcp_user_timeout", |d| {
                d.tcp_user_timeout = Duration::from_secs(3 * 3600)
            }),
            ("relay_heartbeat", |d| {
                d.relay_heartbeat = Duration::from_millis(10)
            }),
        ];
        for (key, spoil) in cases {
            let mut d = defaults();
            spoil(&mut d);
            let e = d.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("postgres.dead_peers.{key}")), "{e}");
        }
    }
}
