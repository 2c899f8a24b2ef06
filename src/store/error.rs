//! Every database error, classified once into the four classes that decide what the worker does
//! next: pause (unavailable), retry at once (contention), retry later through the broker
//! (retryable), or dead-letter (permanent). By SQLSTATE only: PostgreSQL's message text is never
//! kept, because it can quote the offending value.

use tokio_postgres::error::SqlState;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// The database is unreachable, restarting, refusing connections or out of room: not the
    /// message's fault. Consumption pauses until the database answers again.
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
        || *code == SqlState::UNDEFINED_TABLE
    // schema not migrated yet
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
