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

/// The folder of the local servers' throwaway CA and server certificate (`ca.pem`, `ca.key`,
/// `server.pem`, `server.key`), made by `scripts/services.sh start`.
#[allow(dead_code)] // the TLS and privilege tests use them, the benchmark does not
pub fn tls_dir() -> PathBuf {
    std::env::var("EDC_TEST_TLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".services/tls"))
}

/// The broker's AMQP-over-TLS listener, by the host name its certificate names.
#[allow(dead_code)] // the TLS and privilege tests use them, the benchmark does not
pub fn amqps_url() -> String {
    std::env::var("EDC_TEST_AMQPS_URL")
        .unwrap_or_else(|_| "amqps://guest:guest@localhost:5671/%2f".into())
}

/// The runtime role's login (`edc_app`, a member of `edc_runtime`, not the owner).
#[allow(dead_code)] // the TLS and privilege tests use them, the benchmark does not
pub fn pg_runtime_url() -> String {
    std::env::var("EDC_TEST_PG_RUNTIME_URL")
        .unwrap_or_else(|_| "postgres://edc_app:edc_app@127.0.0.1:5432/edc".into())
}
