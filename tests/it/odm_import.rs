//! `edc-ingest odm import` through the real binary against the real broker: the hand-written
//! tests/data/odm-import/import.xml (study ST.IMPORT: 3 subjects, 11 forms, repeated events and
//! forms, group rows, Update and Remove) published as one ODM message per form, with the same
//! message ids on a second import; a file refused at its very end publishes nothing; one bad form
//! is refused where it stands and the others go; a dry run publishes nothing. Each test has its
//! own queue names (self-contained: it needs the broker, not the database).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edc_ingest::config::Settings;
use edc_ingest::odm::clinical::ClinicalReader;
use edc_ingest::odm::xml::Limits;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_edc-ingest");

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/odm-import")
        .join(name)
}

fn amqp_url() -> String {
    std::env::var("EDC_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn amqp() -> Connection {
    Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ for tests (run scripts/test.sh)")
}

/// One test's queues and the environment that points the binary at them.
struct World {
    vars: Vec<(String, String)>,
    queue: String,
}

impl World {
    fn new() -> World {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let queue = format!("edc.records.odm.t{suffix}");
        let vars = vec![
            ("EDC__AMQP__URL".into(), amqp_url()),
            ("EDC__AMQP__QUEUE".into(), queue.clone()),
            ("EDC__AMQP__URGENT_QUEUE".into(), format!("{queue}.urgent")),
            (
                "EDC__AMQP__EVENTS_EXCHANGE".into(),
                format!("edc.events.odm.t{suffix}"),
            ),
            (
                "EDC__AMQP__DEAD_LETTER_EXCHANGE".into(),
                format!("edc.dlx.odm.t{suffix}"),
            ),
            (
                "EDC__AMQP__DEAD_LETTER_QUEUE".into(),
                format!("edc.records.dlq.odm.t{suffix}"),
            ),
            ("EDC__STUDIES_DIR".into(), data("").display().to_string()),
        ];
        World { vars, queue }
    }

    /// `edc-ingest odm import FILE ARGS...` with this world's environment and nothing else.
    fn import(&self, file: &Path, args: &[&str]) -> Output {
        Command::new(BIN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.vars.iter().cloned())
            .args(["odm", "import", file.to_str().unwrap()])
            .args(args)
            .output()
            .expect("the binary runs")
    }

    /// Takes every message of the queue.
    async fn drain(&self) -> Vec<BasicGetMessage> {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                ShortString::from(self.queue.as_str()),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            out.push(m);
        }
        conn.close(200, ShortString::from("bye")).await.unwrap();
        out
    }

    /// The messages waiting in the queue; None when the queue does not exist.
    async fn waiting(&self) -> Option<u32> {
        let conn = amqp().await;
        let ch = conn.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare(
                ShortString::from(self.queue.as_str()),
                passive,
                FieldTable::default(),
            )
            .await;
        let _ = conn.close(200, ShortString::from("bye")).await;
        q.ok().map(|q| q.message_count())
    }

    /// Deletes what the import declared (the queues of both lanes, their delay queues, the
    /// dead-letter queue and exchange).
    async fn cleanup(self) {
        let settings = Settings::load_with_env(None, self.vars.clone()).unwrap();
        let a = &settings.amqp;
        let mut queues = vec![a.dead_letter_queue.clone()];
        for lane in [&a.queue, &a.urgent_queue] {
            queues.push(lane.clone());
            queues.extend(edc_ingest::broker::topology::retry_queues(
                lane,
                &settings.retry,
            ));
        }
        let conn = amqp().await;
        for q in queues {
            let ch = conn.create_channel().await.unwrap();
            let _ = ch
                .queue_delete(ShortString::from(q), QueueDeleteOptions::default())
                .await;
        }
        let ch = conn.create_channel().await.unwrap();
        let _ = ch
            .exchange_delete(
                ShortString::from(a.dead_letter_exchange.as_str()),
                Default::default(),
            )
            .await;
        let _ = conn.close(200, ShortString::from("bye")).await;
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn report(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", text(o)))
}

/// The fixture with `from` replaced by `to` (exactly once), in a file of its own.
fn variant(from: &str, to: &str) -> tempfile::NamedTempFile {
    let fixture = std::fs::read_to_string(data("import.xml")).unwrap();
    assert_eq!(fixture.matches(from).count(), 1, "{from}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), fixture.replace(from, to)).unwrap();
    file
}

/// The 1-based line of the only line of the fixture holding `needle`.
fn line_of(needle: &str) -> u64 {
    let fixture = std::fs::read_to_string(data("import.xml")).unwrap();
    let lines: Vec<usize> = (1..)
        .zip(fixture.lines())
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(lines.len(), 1, "{needle}");
    lines[0] as u64
}

fn header(m: &BasicGetMessage, name: &str) -> Option<AMQPValue> {
    m.properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
}

/// Checks each message is a persistent ODM document of one form; returns the message ids.
fn check_messages(messages: &[BasicGetMessage], batch_size: i64) -> Vec<String> {
    let batch: BTreeSet<String> = messages
        .iter()
        .map(|m| format!("{:?}", header(m, "edc-batch-id").expect("a batch id")))
        .collect();
    assert_eq!(batch.len(), 1, "one batch per import: {batch:?}");
    let mut ids = Vec::new();
    for m in messages {
        let p = &m.properties;
        assert_eq!(
            p.content_type().as_ref().map(|c| c.as_str()),
            Some("application/vnd.cdisc.odm+xml")
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            header(m, "edc-batch-size"),
            Some(AMQPValue::LongLongInt(batch_size))
        );
        let forms: Vec<_> = ClinicalReader::new(&m.data[..], Limits::default())
            .map(|f| f.expect("the message reads as ODM"))
            .collect();
        assert_eq!(forms.len(), 1, "one form a message");
        assert_eq!(forms[0].study_oid, "ST.IMPORT");
        ids.push(p.message_id().as_ref().expect("a message id").to_string());
    }
    ids
}

const SITE_AND_VISIT: [&str; 4] = ["--site", "SITE.C", "--visit", "SE.BASE"];

#[tokio::test]
async fn each_form_is_one_odm_message_and_a_second_import_gives_the_same_ids() {
    let world = World::new();
    let mut args = SITE_AND_VISIT.to_vec();
    args.extend(["--output", "json"]);
    let first = world.import(&data("import.xml"), &args);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let r = report(&first);
    assert_eq!(
        (r["forms_read"].as_u64(), r["published"].as_u64()),
        (Some(11), Some(11))
    );
    assert_eq!(r["forms"]["ST.IMPORT"]["F.VS"], 5);
    assert_eq!(r["transactions"]["Update"], 1);
    assert_eq!(r["queue"], world.queue.as_str());
    let messages = world.drain().await;
    assert_eq!(messages.len(), 11);
    let ids = check_messages(&messages, 11);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 11);
    // The documents keep the repeat keys: two repeats of one form are two messages.
    let bodies: Vec<String> = messages
        .iter()
        .map(|m| String::from_utf8(m.data.clone()).unwrap())
        .collect();
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.contains("FormOID=\"F.AE\" FormRepeatKey="))
            .count(),
        2
    );
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.contains("StudyEventRepeatKey="))
            .count(),
        2
    );

    let second = world.import(&data("import.xml"), &SITE_AND_VISIT);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(out.contains("11 of 11 forms published to"), "{out}");
    let again = world.drain().await;
    assert_eq!(
        check_messages(&again, 11),
        ids,
        "the same ids, in the same order"
    );
    assert_ne!(
        header(&again[0], "edc-batch-id"),
        header(&messages[0], "edc-batch-id"),
        "each import is a batch of its own"
    );
    world.cleanup().await;
}

#[tokio::test]
async fn a_file_refused_at_its_very_end_publishes_nothing_and_exits_2() {
    let world = World::new();
    let broken = variant("</ClinicalData>\n</ODM>", "</ClinicalData>\n</ODMX>");
    let out = world.import(broken.path(), &SITE_AND_VISIT);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let line = line_of("</ClinicalData>") + 1;
    let shown = text(&out);
    assert!(
        shown.contains(&format!("file refused (file_refused): line {line}, column")),
        "{shown}"
    );
    assert!(shown.contains("nothing was published"), "{shown}");
    // Not even a queue was declared: the broker was never asked.
    assert_eq!(world.waiting().await, None);
    world.cleanup().await;
}

#[tokio::test]
async fn a_bad_form_is_refused_where_it_stands_and_the_others_are_published() {
    let world = World::new();
    let bad = variant(
        "Value=\"Nausea\"/>",
        "Value=\"Nausea\"/><ItemData ItemOID=\"I.NOPE\" Value=\"x\"/>",
    );
    let mut args = SITE_AND_VISIT.to_vec();
    args.extend(["--output", "json"]);
    let out = world.import(bad.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let r = report(&out);
    assert_eq!(
        (r["publishable"].as_u64(), r["published"].as_u64()),
        (Some(10), Some(10))
    );
    assert_eq!(r["refused"]["undefined_items"], 1, "{r}");
    let refusal = &r["refusals"][0];
    // The AE form holding the bad item starts 10 lines above it.
    assert_eq!(
        refusal["line"].as_u64(),
        Some(line_of("Value=\"Nausea\"") - 10)
    );
    assert_eq!(refusal["column"], 9);
    assert!(
        !refusal["reason"].as_str().unwrap().contains("Nausea"),
        "{refusal}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 11 forms refused"));
    assert_eq!(check_messages(&world.drain().await, 10).len(), 10);
    world.cleanup().await;
}

#[tokio::test]
async fn a_dry_run_publishes_nothing_and_its_json_report_parses() {
    let world = World::new();
    // A real import first, so that the queue exists, then drained.
    let out = world.import(&data("import.xml"), &SITE_AND_VISIT);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(world.drain().await.len(), 11);
    let mut args = SITE_AND_VISIT.to_vec();
    args.extend(["--dry-run", "--output", "json"]);
    let dry = world.import(&data("import.xml"), &args);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    let r = report(&dry);
    assert_eq!(r["dry_run"], true);
    assert_eq!(
        (r["publishable"].as_u64(), r["published"].as_u64()),
        (Some(11), Some(0))
    );
    assert_eq!(r["validation"]["queried"], 2);
    assert_eq!(r["batch_id"], Value::Null);
    assert_eq!(world.waiting().await, Some(0));
    // Without --site and --visit the forms that lack them are refused: exit 1, still nothing.
    let dry = world.import(&data("import.xml"), &["--dry-run"]);
    assert_eq!(dry.status.code(), Some(1), "{}", text(&dry));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("refused: 2 (no_site 2)"));
    assert_eq!(world.waiting().await, Some(0));
    world.cleanup().await;
}

#[test]
fn a_study_that_pseudonymises_subject_keys_needs_the_key_except_for_a_dry_run() {
    let studies = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(data("ST.IMPORT.yaml")).unwrap();
    let yaml = format!("{yaml}odm: {{subject_key: pseudonymise}}\n");
    std::fs::write(studies.path().join("ST.IMPORT.yaml"), yaml).unwrap();
    let mut world = World::new();
    world.vars.retain(|(k, _)| k != "EDC__STUDIES_DIR");
    world.vars.push((
        "EDC__STUDIES_DIR".into(),
        studies.path().display().to_string(),
    ));
    let out = world.import(&data("import.xml"), &SITE_AND_VISIT);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("needs the pseudonymisation key"),
        "{}",
        text(&out)
    );
    let mut args = SITE_AND_VISIT.to_vec();
    args.push("--dry-run");
    let dry = world.import(&data("import.xml"), &args);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("note: no pseudonymisation key"));
}
