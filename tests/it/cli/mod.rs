//! The command line as an operator meets it, through the real binary, one file per command or
//! concern: which commands need the key and `EDC_CONFIG` ([`settings`]), help with examples and
//! completions ([`help`]), the `dlq` commands with `--kind`, `--output json` and output streamed and
//! escaped ([`dlq`]), progress only on a terminal ([`progress`]), and `status` ([`status`]).

mod dlq;
mod help;
mod progress;
mod settings;
mod status;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::{Value, json};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// The binary with this test's environment and no key setting at all.
fn keyless(env: &TestEnv, extra: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = edc_command(env, extra, args);
    cmd.env_remove("EDC__DEV_INSECURE_PSEUDONYM_KEY");
    cmd.stdin(Stdio::null());
    cmd
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One JSON document on stdout.
fn json_of(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", text(o)))
}

/// Publishes a message straight into the dead-letter queue, as if it had been dead-lettered with
/// these properties and headers.
async fn dead_letter(env: &TestEnv, body: &[u8], props: BasicProperties, headers: &[(&str, &str)]) {
    let conn = amqp().await;
    let ch = conn.create_channel().await.unwrap();
    let settings = env.settings(&[]);
    edc_ingest::broker::declare(&ch, &settings.amqp, &settings.retry)
        .await
        .unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert((*k).into(), AMQPValue::LongString((*v).into()));
    }
    let confirm = ch
        .basic_publish(
            ShortString::from(""),
            ShortString::from(env.dlq.as_str()),
            Default::default(),
            body,
            props.with_headers(table).with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    conn.close(200, "bye".into()).await.unwrap();
}

/// A record from SITE-04 (not a site of the study): dead-lettered as invalid.
fn from_site_4(batch: &str, size: u32) -> Vec<u8> {
    let mut r = record(vs_items());
    r["site"] = json!("SITE-04");
    r["batch"] = json!({"id": batch, "size": size});
    bytes(&r)
}
