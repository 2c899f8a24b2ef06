//! Typed settings.
//!
//! Loading is layered: the defaults compiled in from `config/default.yaml`, then the file given with
//! `--config`, then `EDC__SECTION__KEY` environment variables. Every struct denies unknown fields, so a
//! typo in a file or in an `EDC__` variable is an error rather than a silently ignored setting.
//! Validation ([`Settings::validate`]) is pure and runs before anything connects.
//!
//! Secrets (the passwords inside URLs, the pseudonymisation key) live in [`Secret`], whose `Debug` and
//! `Display` never show the value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::lane::Lane;

mod dead_peers;
mod odm;
mod parse;
mod private;
mod retention;
mod secret;
mod validate;

pub use dead_peers::DeadPeerSettings;
pub use odm::OdmSettings;

use parse::{duration, glob_match, optional_duration};
pub use private::{MAX_SECRET_FILE_BYTES, read_private_file, read_secret_file};
pub use retention::{MIN_RETENTION, RetentionSettings, check_retention, show_horizon};
pub use secret::{Secret, SecretUrl, nodes, redact_url};

/// The defaults, documented key by key in the file itself.
pub const DEFAULT_YAML: &str = include_str!("../../config/default.yaml");

/// Every way the configuration can be wrong. `main` maps each to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub postgres: PostgresSettings,
    /// Size of the fixed worker set. Must not exceed `postgres.pool_size`.
    pub workers: usize,
    /// Committer tasks: each stores the records ready at that moment with one statement, on a
    /// connection of the pool (group commit). Must not exceed `postgres.pool_size`.
    pub committers: usize,
    /// Records a worker commits in one transaction. 1 (the default) keeps one delivery per worker in
    /// flight; above 1 the prefetch becomes `workers * batch_size`. See `config/default.yaml`.
    pub batch_size: usize,
    pub studies_dir: PathBuf,
    pub pseudonym_key_file: Option<PathBuf>,
    pub pseudonym_key: Option<Secret>,
    /// Allows a built-in, publicly known key when no key is configured. For local demos only.
    pub dev_insecure_pseudonym_key: bool,
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    #[serde(deserialize_with = "duration")]
    pub job_timeout: Duration,
    pub max_message_bytes: usize,
    pub retry: RetrySettings,
    /// A redelivered message that was started this many times without being settled (each start
    /// ended by a crash of the process) is dead-lettered as `poison` instead of being run again.
    pub crash_limit: u32,
    pub retention: RetentionSettings,
    pub log: LogSettings,
    pub http: HttpSettings,
    pub otel: OtelSettings,
    /// The caps of the CDISC ODM reader.
    #[serde(default)]
    pub odm: OdmSettings,
}

/// Trace export over OTLP/HTTP.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtelSettings {
    /// The collector's base URL (`http://host:4318`; spans go to `/v1/traces`); empty: traces are
    /// not exported, and nothing of it is set up.
    pub endpoint: String,
    /// The `service.name` of the spans.
    pub service_name: String,
}

/// The HTTP listener: `/metrics`, `/livez`, `/readyz`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// `IP:port` to listen on; port 0 takes a free port (logged at start); empty turns the listener
    /// off.
    pub listen: String,
}

impl HttpSettings {
    /// The address to listen on; None when the listener is off.
    pub fn address(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(None);
        }
        listen.parse().map(Some).map_err(|_| {
            ConfigError::Invalid(format!(
                "http.listen `{listen}` is not an IP address and port (like 127.0.0.1:9090 or [::]:9090); empty turns the listener off"
            ))
        })
    }
}

impl AmqpSettings {
    /// Whether a message's `reply_to` may get its answer (see `reply_to_allowed`).
    pub fn reply_allowed(&self, reply_to: &str) -> bool {
        self.reply_to_allowed
            .iter()
            .any(|pattern| glob_match(pattern, reply_to))
    }

    /// The queue of a lane.
    pub fn queue_of(&self, lane: Lane) -> &str {
        match lane {
            Lane::Urgent => &self.urgent_queue,
            Lane::Normal => &self.queue,
        }
    }
}

/// Retries of errors that are neither the record's fault nor an outage, through the broker's delay
/// queues (never by holding a delivery unacked).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts in all, the first included; after the last the message is dead-lettered as `failed`.
    pub max_attempts: u32,
    #[serde(deserialize_with = "duration")]
    pub initial_delay: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_delay: Duration,
}

impl RetrySettings {
    /// The wait before attempt `attempt + 1`, after `attempt` attempts failed (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    pub url: SecretUrl,
    /// A file holding the password of `url` (every node), instead of writing it there.
    pub password_file: Option<PathBuf>,
    pub queue: String,
    /// The fast lane: serious adverse events and other urgent records; always taken first.
    pub urgent_queue: String,
    /// Topic exchange that downstream events are published to (record.*, alert.raised, batch.completed).
    pub events_exchange: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    /// The reply addresses (AMQP `reply_to`) that get an answer, as patterns where `*` stands for
    /// any text. A reply_to is a routing key on the default exchange, so without this an uploader
    /// could make the daemon publish into any queue of the vhost.
    pub reply_to_allowed: Vec<String>,
    /// Dead-letter (`invalid`) a message without an AMQP `user_id` (see docs/operators.md).
    #[serde(default)]
    pub require_user_id: bool,
    /// How long a dead letter is kept in the dead-letter queue (it holds the original body, with
    /// its patient identifiers); none: until it is replayed or purged.
    #[serde(deserialize_with = "optional_duration")]
    pub dead_letter_ttl: Option<Duration>,
    /// The quorum queue's own delivery limit: the broker's last backstop against a message that is
    /// delivered again and again. Part of the queue's declaration, so it must match an existing queue.
    pub delivery_limit: u32,
    #[serde(deserialize_with = "duration")]
    pub reconnect_initial: Duration,
    #[serde(deserialize_with = "duration")]
    pub reconnect_max: Duration,
    #[serde(deserialize_with = "duration")]
    pub operation_timeout: Duration,
    /// Certificates for the `amqps://` nodes of `url`.
    pub tls: TlsSettings,
}

/// The files of a TLS connection: the CA to trust, and the client's own certificate and key. All
/// PEM. See README, "TLS".
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate(s) of the CA that the server's certificate must chain to; none: the
    /// system's store (RabbitMQ). For PostgreSQL, a CA makes `verify-full` the default `sslmode`;
    /// without one, the default is `prefer` on this machine only (see `store::tls`).
    pub ca_file: Option<PathBuf>,
    /// The client's certificate (chain), presented to the server; with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key: readable by its owner alone (mode 0400 or 0600).
    pub key_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Whether any file is set.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// The runtime role's connection.
    pub url: SecretUrl,
    /// A file holding the password of `url` (the runtime role), instead of writing it there. Not
    /// of `migrate_url`, which has its own, `migrate_password_file`.
    pub password_file: Option<PathBuf>,
    /// The role that owns the schema and runs the migrations; none: `url`'s role does.
    pub migrate_url: Option<SecretUrl>,
    /// A file holding the password of `migrate_url`. The owner and the runtime role are two roles
    /// with two passwords, and where they are deployed apart (a migration job, the daemons) each
    /// holds only its own file.
    pub migrate_password_file: Option<PathBuf>,
    /// Apply pending migrations when the daemon starts. Off where a separate job runs
    /// `edc-ingest migrate` with the owner role.
    pub migrate_on_start: bool,
    /// The most connections the pool may hold: a cap, which `workers` must not exceed. What the
    /// pool opens is [`Settings::pool_connections`].
    pub pool_size: usize,
    /// Connections the workers may hold at once for the statements they run themselves (see
    /// [`crate::store::WorkerShare`]).
    pub worker_connections: usize,
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// How long a worker waits for a pooled connection before it counts as a database failure.
    #[serde(deserialize_with = "duration")]
    pub acquire_timeout: Duration,
    /// Set on every connection: a statement, a wait for a lock, a transaction left idle that runs
    /// past them is ended by the server itself, even if the daemon that started it is gone.
    #[serde(deserialize_with = "duration")]
    pub statement_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub lock_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub idle_in_transaction_timeout: Duration,
    /// TCP keepalives and timeouts on both ends of every connection, and the relay's heartbeat: a
    /// peer that vanished without a word is given up within tens of seconds.
    pub dead_peers: DeadPeerSettings,
    /// The longest a start waits for another replica's migrations (their advisory lock).
    #[serde(deserialize_with = "duration")]
    pub migration_lock_timeout: Duration,
    /// The group role (NOLOGIN) that the migrations grant the runtime's privileges to; the login
    /// role of `url` is a member of it. Empty: no grants (the daemon runs as the owner, which
    /// `allow_owner_runtime` must allow).
    pub runtime_role: String,
    /// Lets `run` work as the owner of the evidence tables (or of the schema), or as a superuser,
    /// with a loud warning at start; false (the default): such a start is refused.
    pub allow_owner_runtime: bool,
    /// Certificates for the connections of `url` and `migrate_url`; `sslmode` in the URL (else
    /// the default, see `store::tls`) says whether TLS is used and what is checked.
    pub tls: TlsSettings,
}

impl PostgresSettings {
    /// The role that migrates: `migrate_url`, else `url`.
    pub fn migration_url(&self) -> &SecretUrl {
        self.migrate_url.as_ref().unwrap_or(&self.url)
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `edc_ingest=debug,lapin=warn`.
    pub level: String,
}

impl Settings {
    /// Defaults, then `file`, then `EDC__*` variables from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (tests use this).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        Self::checked(layered(file, env)?)
    }

    /// As [`Settings::load_with_env`], with the file's YAML text given: for tests and fuzz targets.
    #[doc(hidden)]
    pub fn load_from_str(
        yaml: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let text = config::File::from_str(yaml, config::FileFormat::Yaml);
        Self::checked(layers(vec![Box::new(text)], env)?)
    }

    fn checked(layers: config::Config) -> Result<Settings, ConfigError> {
        let mut settings: Settings = layers
            .try_deserialize()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        settings.read_password_files()?;
        // The fast lane follows the work queue's name unless it is named itself.
        if settings.amqp.urgent_queue.trim().is_empty() {
            settings.amqp.urgent_queue = format!("{}.urgent", settings.amqp.queue);
        }
        settings.validate()?;
        Ok(settings)
    }

    /// `http.listen` as the layers give it, whatever else they hold: for `healthcheck`, which must
    /// not fail on a setting it does not use. None if the layers cannot be read at all.
    pub fn http_listen(file: Option<&Path>) -> Option<String> {
        layered(file, std::env::vars())
            .ok()?
            .get_string("http.listen")
            .ok()
    }

    /// Sets the passwords read from `amqp.password_file`, `postgres.password_file` and
    /// `postgres.migrate_password_file` in their URLs.
    fn read_password_files(&mut self) -> Result<(), ConfigError> {
        let set = |url: &SecretUrl, file: &Path, key: &str| {
            let password =
                read_secret_file(file).map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))?;
            url.with_password(password.expose()).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "{key}: the URL ({url}) does not parse, so no password can be set in it"
                ))
            })
        };
        if let Some(file) = self.amqp.password_file.clone() {
            self.amqp.url = set(&self.amqp.url, &file, "amqp.password_file")?;
        }
        if let Some(file) = self.postgres.password_file.clone() {
            self.postgres.url = set(&self.postgres.url, &file, "postgres.password_file")?;
        }
        if let Some(file) = self.postgres.migrate_password_file.clone() {
            let Some(url) = self.postgres.migrate_url.clone() else {
                return Err(ConfigError::Invalid(
                    "postgres.migrate_password_file is set but postgres.migrate_url is not: the \
                     password of postgres.url comes from postgres.password_file"
                        .into(),
                ));
            };
            let url = set(&url, &file, "postgres.migrate_password_file")?;
            self.postgres.migrate_url = Some(url);
        }
        self.http.address()?;
        Ok(())
    }

    /// A one-line description safe to log: no secret appears in it.
    pub fn describe(&self) -> String {
        format!(
            "amqp={} queue={} postgres={} pool_size={} worker_connections={} connections={} workers={} committers={} batch_size={} prefetch={} job_timeout={:?} shutdown_grace={:?} http={}",
            self.amqp.url,
            self.amqp.queue,
            self.postgres.url,
            self.postgres.pool_size,
            self.postgres.worker_connections,
            self.pool_connections() + 1,
            self.workers,
            self.committers,
            self.batch_size,
            self.prefetch(),
            self.job_timeout,
            self.shutdown_grace,
            if self.http.listen.trim().is_empty() {
                "off"
            } else {
                self.http.listen.trim()
            }
        )
    }
}

/// The defaults, then `file`, then the `EDC__*` variables of `env`, not yet checked.
fn layered(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<config::Config, ConfigError> {
    let mut source: Vec<Box<dyn config::Source + Send + Sync>> = Vec::new();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::Load(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        let f = config::File::from(path.to_path_buf()).format(config::FileFormat::Yaml);
        source.push(Box::new(f));
    }
    layers(source, env)
}

/// The defaults, then `file`, then the `EDC__*` variables of `env`.
fn layers(
    file: Vec<Box<dyn config::Source + Send + Sync>>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<config::Config, ConfigError> {
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULT_YAML,
        config::FileFormat::Yaml,
    ));
    if !file.is_empty() {
        builder = builder.add_source(file);
    }
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("EDC__"))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix("EDC")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env)),
    );
    builder
        .build()
        .map_err(|e| ConfigError::Load(e.to_string()))
}

#[cfg(test)]
mod tests;
