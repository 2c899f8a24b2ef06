//! Integration tests against a real RabbitMQ and a real PostgreSQL (see `scripts/test.sh`, which starts
//! both). Each test gets a fresh database and fresh queue names, so tests run in parallel.

#![forbid(unsafe_code)]

mod busy_keys;
mod cli;
mod connections;
mod dead_peers;
mod delivery_limits;
mod dlq_trust;
mod events;
mod helpers;
mod hostile;
mod lifecycle;
mod linkage;
mod listener;
mod liveness;
mod odm_end_to_end;
mod odm_import;
mod odm_real;
mod odm_store;
mod operations;
mod outcomes;
mod privacy;
mod privileges;
mod probes;
mod protocol_model;
mod receipts;
mod retention;
mod schema_rights;
mod secrets;
mod status_tls;
mod study_odm;
mod timeouts;
mod tls;
mod wire;
