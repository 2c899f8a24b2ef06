//! Where the local servers are, for the integration tests, the chaos suite and the benchmark alike
//! (each includes this file with `#[path]`): `scripts/services.sh env` exports the URLs.

use std::path::PathBuf;

pub fn amqp_url() -> String {
    std::env::var("EDC_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn pg_url() -> String {
    std::env::var("EDC_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://edc:edc@127.0.0.1:5432/edc".into())
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Replaces the database name of a PostgreSQL URL.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("a PostgreSQL URL with a database");
    format!("{base}/{db}")
}
