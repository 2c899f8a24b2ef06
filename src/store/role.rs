//! Least privilege: the grants of the runtime role (made by the migrating role, the owner) and the
//! check, at start, that the daemon's own role can do its work.

use tokio_postgres::Client;

/// Grants the runtime role (`postgres.runtime_role`) its privileges, as the owner, with the
/// migration's `edc_grant_runtime` (V9). What it did is logged.
pub async fn grant(client: &Client, runtime_role: &str) -> Result<(), tokio_postgres::Error> {
    let said: String = client
        .query_one("SELECT edc_grant_runtime($1)", &[&runtime_role])
        .await?
        .get(0);
    tracing::info!(runtime_role, "{said}");
    Ok(())
}

/// What the daemon's role may not do.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Everything the daemon needs.
    Ready,
    /// The schema is not (fully) there yet: migrations still to run.
    NotMigrated,
    /// The privileges it lacks, as `PRIVILEGE on object`.
    Lacks(Vec<String>),
}

/// The table privileges `run` needs besides executing the owner's functions (see V9).
const TABLES: &[(&str, &str)] = &[
    ("delivery_ledger", "SELECT"),
    ("delivery_ledger", "INSERT"),
    ("delivery_ledger", "UPDATE"),
    ("delivery_ledger", "DELETE"),
    ("outbox", "SELECT"),
    ("outbox", "UPDATE"),
    ("outbox", "DELETE"),
    ("outbox_parked", "INSERT"),
    ("batches", "SELECT"),
];

/// Whether the role of `client` can do the daemon's work: execute every function that writes the
/// records (those that run as their owner), and use its working tables.
pub async fn check(client: &Client) -> Result<Check, tokio_postgres::Error> {
    let (tables, privileges): (Vec<&str>, Vec<&str>) = TABLES.iter().copied().unzip();
    let rows = client
        .query(
            "SELECT w.t, w.p, c.oid IS NULL, c.oid IS NOT NULL AND NOT has_table_privilege(c.oid, w.p)
             FROM unnest($1::text[], $2::text[]) AS w(t, p)
             LEFT JOIN pg_class c ON c.oid = to_regclass(w.t)
             UNION ALL
             SELECT p.oid::regprocedure::text, 'EXECUTE', false, NOT has_function_privilege(p.oid, 'EXECUTE')
             FROM pg_proc p
             WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
               AND p.prosecdef
             UNION ALL
             SELECT 'functions that run as the owner', '', NOT EXISTS (
                 SELECT FROM pg_proc p
                 WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
                   AND p.prosecdef), false",
            &[&tables, &privileges],
        )
        .await?;
    if rows.iter().any(|r| r.get::<_, bool>(2)) {
        return Ok(Check::NotMigrated);
    }
    let lacks: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, bool>(3))
        .map(|r| format!("{} on {}", r.get::<_, String>(1), r.get::<_, String>(0)))
        .collect();
    Ok(if lacks.is_empty() {
        Check::Ready
    } else {
        Check::Lacks(lacks)
    })
}
