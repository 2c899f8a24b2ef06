//! Integration tests against a real RabbitMQ and a real PostgreSQL (see `scripts/test.sh`, which starts
//! both). Each test gets a fresh database and fresh queue names, so tests run in parallel.

mod busy_keys;
mod cli;
mod delivery_limits;
mod events;
mod helpers;
mod hostile;
mod lifecycle;
mod liveness;
mod operations;
mod outcomes;
mod privacy;
mod privileges;
mod probes;
mod receipts;
mod retention;
mod schema_rights;
mod timeouts;
mod tls;
