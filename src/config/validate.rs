//! The checks of the settings that need no I/O: ranges, and relations between settings; and the
//! figures derived from them (the prefetch, the connections a replica opens).

use std::time::Duration;

use super::{ConfigError, Settings};

impl Settings {
    /// Deliveries unacked at once: one per worker, times the batch size.
    pub fn prefetch(&self) -> usize {
        self.workers * self.batch_size
    }

    /// The most connections the pool opens: one for each committer, the workers' share
    /// (`postgres.worker_connections`), and one each for the database gate's probe and the backlog
    /// gauge; never more than `postgres.pool_size`. The outbox relay holds one more, outside the
    /// pool: a replica's connections are this plus one.
    pub fn pool_connections(&self) -> usize {
        (self.committers + self.postgres.worker_connections + 2).min(self.postgres.pool_size)
    }

    /// Checks that need no I/O: relations between settings and their ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.workers == 0 {
            return invalid("workers must be at least 1".into());
        }
        if self.postgres.pool_size == 0 {
            return invalid("postgres.pool_size must be at least 1".into());
        }
        if self.workers > self.postgres.pool_size {
            return invalid(format!(
                "workers ({}) must not exceed postgres.pool_size ({}): the worker set is capped by the connection pool",
                self.workers, self.postgres.pool_size
            ));
        }
        if self.postgres.worker_connections == 0 {
            return invalid("postgres.worker_connections must be at least 1".into());
        }
        if self.committers == 0 || self.committers > self.postgres.pool_size {
            return invalid(format!(
                "committers ({}) must be between 1 and postgres.pool_size ({}): each holds a database connection while it commits",
                self.committers, self.postgres.pool_size
            ));
        }
        if self.batch_size == 0 || self.batch_size > 1000 {
            return invalid(format!(
                "batch_size ({}) must be between 1 and 1000",
                self.batch_size
            ));
        }
        if self.prefetch() > u16::MAX as usize {
            return invalid(format!(
                "workers x batch_size ({}) is above the AMQP prefetch limit of {}",
                self.prefetch(),
                u16::MAX
            ));
        }
        if self.retry.max_attempts == 0 || self.retry.max_attempts > 20 {
            return invalid("retry.max_attempts must be between 1 and 20".into());
        }
        if self.retry.initial_delay < Duration::from_millis(1)
            || self.retry.max_delay < self.retry.initial_delay
        {
            return invalid("retry.initial_delay must be >= 1ms and <= retry.max_delay".into());
        }
        if self.crash_limit == 0 {
            return invalid("crash_limit must be at least 1".into());
        }
        if self.max_message_bytes == 0 {
            return invalid("max_message_bytes must be at least 1".into());
        }
        // RabbitMQ closes a channel whose delivery stays unacked past consumer_timeout (30 min by
        // default); a job must always end well before that.
        if self.job_timeout.is_zero() || self.job_timeout > Duration::from_secs(20 * 60) {
            return invalid(
                "job_timeout must be between 1ms and 20m (RabbitMQ's consumer_timeout is 30m)"
                    .into(),
            );
        }
        for (key, name) in [
            ("amqp.queue", &self.amqp.queue),
            ("amqp.urgent_queue", &self.amqp.urgent_queue),
            ("amqp.events_exchange", &self.amqp.events_exchange),
            ("amqp.dead_letter_exchange", &self.amqp.dead_letter_exchange),
            ("amqp.dead_letter_queue", &self.amqp.dead_letter_queue),
        ] {
            if name.trim().is_empty() || name.len() > 255 {
                return invalid(format!("{key} must be a name of 1 to 255 characters"));
            }
        }
        let names = [
            &self.amqp.queue,
            &self.amqp.urgent_queue,
            &self.amqp.dead_letter_queue,
        ];
        if names[0] == names[1] || names[0] == names[2] || names[1] == names[2] {
            return invalid(
                "amqp.queue, amqp.urgent_queue and amqp.dead_letter_queue must all differ".into(),
            );
        }
        if self.amqp.reconnect_initial.is_zero()
            || self.amqp.reconnect_max < self.amqp.reconnect_initial
        {
            return invalid("amqp.reconnect_initial must be > 0 and <= amqp.reconnect_max".into());
        }
        let pg = &self.postgres;
        for (key, value) in [
            ("postgres.statement_timeout", pg.statement_timeout),
            ("postgres.lock_timeout", pg.lock_timeout),
            (
                "postgres.idle_in_transaction_timeout",
                pg.idle_in_transaction_timeout,
            ),
            ("postgres.migration_lock_timeout", pg.migration_lock_timeout),
        ] {
            if value < Duration::from_millis(1) {
                return invalid(format!("{key} must be at least 1ms"));
            }
        }
        pg.dead_peers.validate()?;
        if self.amqp.operation_timeout < Duration::from_secs(1) {
            return invalid("amqp.operation_timeout must be at least 1s".into());
        }
        for (key, tls) in [("amqp.tls", &self.amqp.tls), ("postgres.tls", &pg.tls)] {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return invalid(format!(
                    "{key}.cert_file and {key}.key_file go together: set both or neither"
                ));
            }
        }
        // One plaintext node in a list of TLS nodes would get the password and every record in the
        // clear whenever the daemon fails over to it: TLS for some nodes is TLS for none.
        let schemes: Vec<&str> = self
            .amqp
            .url
            .nodes()
            .into_iter()
            .filter_map(|n| n.split_once("://").map(|(scheme, _)| scheme))
            .collect();
        let tls = schemes.iter().any(|s| s.eq_ignore_ascii_case("amqps"));
        let plain = schemes.iter().any(|s| s.eq_ignore_ascii_case("amqp"));
        if tls && plain {
            return invalid(
                "amqp.url mixes amqp:// and amqps:// nodes: one plaintext node defeats TLS for \
                 all (a failover to it sends the password and every record in the clear); list \
                 amqps:// nodes only"
                    .into(),
            );
        }
        if self.amqp.tls.is_set()
            && !self
                .amqp
                .url
                .nodes()
                .iter()
                .any(|n| n.starts_with("amqps://"))
        {
            return invalid(
                "amqp.tls is set but no node of amqp.url is amqps://: the connection would not use TLS"
                    .into(),
            );
        }
        let role = pg.runtime_role.as_str();
        if role.len() > 63 || !role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return invalid(format!(
                "postgres.runtime_role `{role}` must be empty or a role name of letters, digits and _ (at most 63)"
            ));
        }
        for (key, horizon) in [
            ("retention.working_tables", self.retention.working_tables),
            ("retention.outbox_parked", self.retention.outbox_parked),
        ] {
            if let Some(horizon) = horizon {
                super::check_retention(key, horizon)?;
            }
        }
        self.http.address()?;
        self.odm.validate()?;
        let endpoint = self.otel.endpoint.trim();
        if !endpoint.is_empty() && !endpoint.starts_with("http://") {
            return invalid(format!(
                "otel.endpoint `{endpoint}` must be an http:// URL (a collector beside the daemon); empty turns traces off"
            ));
        }
        Ok(())
    }
}
