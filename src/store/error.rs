//! Every database error, classified once into the four classes that decide what the worker does
//! next: pause (unavailable), retry at once (contention), retry later through the broker
//! (retryable), or dead-letter (permanent). By SQLSTATE only: PostgreSQL's message text is never
//! kept, because it can quote the offending value.

use tokio_postgres::error::SqlState;

use crate::failure::{Failure, runtime};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The database is unreachable, restarting, refusing connections or out of room, or refuses
    /// our statements (a privilege revoked, a schema this build does not know): not the message's
    /// fault. Consumption pauses until the database answers again.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Lost a race with another transaction (serialization failure, deadlock, lock timeout): retry
    /// at once.
    #[error("database contention: {0}")]
    Contention(String),
    /// Neither clearly permanent nor infrastructure: retried later through the broker, a bounded
    /// number of times.
    #[error("database error: {0}")]
    Retryable(String),
    /// The database refused this record; retrying will not help.
    #[error("database refused the record: {0}")]
    Permanent(String),
}

impl From<tokio_postgres::Error> for PersistError {
    fn from(e: tokio_postgres::Error) -> Self {
        classify(&e)
    }
}

impl From<deadpool_postgres::PoolError> for PersistError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => classify(&e),
            other => PersistError::Unavailable(format!("connection pool: {other}")),
        }
    }
}

/// Decides the error's class from the SQLSTATE alone.
pub fn classify(e: &tokio_postgres::Error) -> PersistError {
    classify_code(e.code())
}

/// The class of an error with this SQLSTATE; `None`: no SQLSTATE, the connection broke, timed out or
/// was never made.
pub fn classify_code(code: Option<&SqlState>) -> PersistError {
    let Some(code) = code else {
        return PersistError::Unavailable("connection to PostgreSQL failed or was lost".into());
    };
    let c = code.code();
    let what = format!("PostgreSQL SQLSTATE {c}");
    if c.starts_with("08") // connection exception
        || c.starts_with("53") // insufficient resources: too many connections, disk full
        || c.starts_with("57") // operator intervention: admin shutdown, cannot connect now
        || c.starts_with("58") // system error: I/O
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION // a standby after a failover
        // Class 42, access rule violation: the database refuses our statements, never a record's
        // values (they are parameters). A privilege revoked (insufficient_privilege, 42501), a
        // migration half-applied or made by a newer version (undefined table, function or
        // column): the database is not usable by us until an operator fixes it. Waiting is right;
        // dead-lettering would not be.
        || c.starts_with("42")
    {
        PersistError::Unavailable(what)
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
    {
        PersistError::Contention(what)
    } else if c.starts_with("22") // data exception
        || c.starts_with("23") // integrity constraint violation
        || c.starts_with("54")
    // program limit exceeded (a value too large to index)
    {
        PersistError::Permanent(what)
    } else {
        PersistError::Retryable(what)
    }
}

/// Why a connection to PostgreSQL could not be made: worth waiting for (the server is not up yet,
/// or full), or not (it refused who we are or how we connect: credentials, the database, TLS).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach PostgreSQL at {at}: {why}")]
    Unreachable { at: String, why: String },
    #[error("PostgreSQL at {at} refused the connection: {why}")]
    Refused { at: String, why: String },
}

impl ConnectError {
    /// Classifies a failed connect to `at` (already redacted).
    pub fn of(at: String, e: &tokio_postgres::Error) -> ConnectError {
        let why = explain(e);
        let refused = match e.code() {
            // Starting up, shutting down, too many connections: wait.
            Some(code) if matches!(&code.code()[..2], "57" | "53" | "08") => false,
            // Credentials, authorisation, an unknown database, anything else the server said.
            Some(_) => true,
            // No answer from a server: unreachable, unless TLS refused the connection: the
            // certificate, an alert from the server, or a server without TLS under `require`.
            None => crate::tls::is_refusal(e) || is_tls_unsupported(e),
        };
        if refused {
            ConnectError::Refused { at, why }
        } else {
            ConnectError::Unreachable { at, why }
        }
    }
}

/// Migrations that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(
        "another replica held the migration lock for more than {0:?} (postgres.migration_lock_timeout); is a migration stuck?"
    )]
    LockTimeout(std::time::Duration),
    #[error("migration failed: {0}")]
    Failed(String),
}

impl MigrateError {
    /// What it means for the command that ran the migrations: a database that refuses us is the
    /// operator's to fix (exit 2); anything else failed while running (exit 1).
    pub fn failure(self) -> Failure {
        match self {
            e @ MigrateError::Connect(ConnectError::Refused { .. }) => {
                Failure::setup(e.to_string())
            }
            e => runtime(e),
        }
    }
}

/// tokio-postgres's answer to `sslmode=require` when the server says it has no TLS: an error of
/// its own whose cause is this exact text (no type to match; checked by the integration tests).
fn is_tls_unsupported(e: &tokio_postgres::Error) -> bool {
    use std::error::Error;
    e.source()
        .is_some_and(|cause| cause.to_string() == "server does not support TLS")
}

/// What went wrong while connecting, with its causes: tokio-postgres's own text says only "db
/// error" or "error performing TLS handshake". A server's answer to a connection attempt names the
/// role or the database at most, never a value of a record.
fn explain(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut why = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        // io::Error's source() skips the error it wraps, whose text its own Display already is.
        why.push_str(": ");
        why.push_str(&c.to_string());
        cause = c.source();
    }
    first_line(&why)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(code: Option<SqlState>) -> &'static str {
        match classify_code(code.as_ref()) {
            PersistError::Unavailable(_) => "unavailable",
            PersistError::Contention(_) => "contention",
            PersistError::Retryable(_) => "retryable",
            PersistError::Permanent(_) => "permanent",
        }
    }

    #[test]
    fn outages_pause_races_retry_at_once_bad_data_is_permanent() {
        let cases = [
            (None, "unavailable"),
            (Some(SqlState::CONNECTION_FAILURE), "unavailable"),
            (Some(SqlState::TOO_MANY_CONNECTIONS), "unavailable"),
            (Some(SqlState::DISK_FULL), "unavailable"),
            (Some(SqlState::ADMIN_SHUTDOWN), "unavailable"),
            (Some(SqlState::CANNOT_CONNECT_NOW), "unavailable"),
            (Some(SqlState::READ_ONLY_SQL_TRANSACTION), "unavailable"),
            (Some(SqlState::UNDEFINED_TABLE), "unavailable"),
            (Some(SqlState::UNDEFINED_FUNCTION), "unavailable"),
            (Some(SqlState::UNDEFINED_COLUMN), "unavailable"),
            (Some(SqlState::INSUFFICIENT_PRIVILEGE), "unavailable"),
            (Some(SqlState::T_R_SERIALIZATION_FAILURE), "contention"),
            (Some(SqlState::T_R_DEADLOCK_DETECTED), "contention"),
            (Some(SqlState::LOCK_NOT_AVAILABLE), "contention"),
            (Some(SqlState::NUMERIC_VALUE_OUT_OF_RANGE), "permanent"),
            (Some(SqlState::CHECK_VIOLATION), "permanent"),
            (Some(SqlState::PROGRAM_LIMIT_EXCEEDED), "permanent"),
            (Some(SqlState::RAISE_EXCEPTION), "retryable"),
            (Some(SqlState::INTERNAL_ERROR), "retryable"),
        ];
        for (code, want) in cases {
            let shown = code.as_ref().map_or("none", |c| c.code()).to_string();
            assert_eq!(class(code), want, "SQLSTATE {shown}");
        }
    }

    #[test]
    fn the_reason_names_the_sqlstate_and_nothing_the_server_said() {
        let e = classify_code(Some(&SqlState::CHECK_VIOLATION));
        assert_eq!(
            e.to_string(),
            "database refused the record: PostgreSQL SQLSTATE 23514"
        );
    }
}
