//! Content headers an uploader shapes byte by byte, read by the AMQP client before any code of ours:
//! a header frame larger than the `frame_max` the daemon negotiated (RabbitMQ passes one on as its
//! publisher sent it), header tables and arrays nested thousands deep (RabbitMQ accepts any depth),
//! short strings that are not UTF-8 (RabbitMQ never checks). Each once took every replica down: the
//! process (a stack overflow aborts it) or its connection (a frame or parse error; reconnect, every
//! unacknowledged delivery returned, the same frame again).
//!
//! Each test publishes its hostile messages with the raw publisher of the kit, between innocent
//! ones, then runs the real binary, and checks: the process stays up, it never reconnects, every
//! message gets the outcome its body deserves (a valid one stored once; an invalid one dead-lettered
//! once with our reason, the body byte for byte, one `rejections` row), and the dlq tools read the
//! dead letters.

use std::sync::Mutex;
use std::time::Duration;

use lapin::types::AMQPValue;
use serde_json::{Value, json};

use crate::helpers::kit::raw_amqp::{
    Prop, Props, RawPublisher, header_frame_len, long_string, nested_arrays, nested_tables, table,
};
use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);
/// RabbitMQ's largest `frame_max` (its default), which any uploader may ask for.
const BROKER_FRAME_MAX: u32 = 131_072;

/// One message published raw: its properties and whether its body is a valid record.
struct Raw {
    name: String,
    props: Props,
    valid: bool,
}

impl Raw {
    fn new(name: &str, props: Props, valid: bool) -> Raw {
        Raw {
            name: name.to_string(),
            props: props.delivery_mode(2),
            valid,
        }
    }
}

/// Why an invalid [`body`] is dead-lettered.
const REASON: &str = "visit is not one of study DEMO-001's visits";

/// A record with a fresh id: valid, or invalid (a visit the study does not have).
fn body(valid: bool) -> Vec<u8> {
    let mut r = record(vs_items());
    if !valid {
        r["visit"] = json!("WEEK99");
    }
    bytes(&r)
}

/// Publishes three innocent records, the raw messages (each on a connection that negotiated
/// `uploader_frame_max`), three more innocent records; runs the daemon (its URL with `url_query`);
/// and checks everything the module says. Returns the dead letters, drained.
async fn scenario(
    env: &TestEnv,
    uploader_frame_max: u32,
    url_query: &str,
    raws: &[Raw],
) -> Vec<lapin::message::BasicGetMessage> {
    let innocents = |from: usize| -> Vec<(String, Vec<u8>)> {
        (from..from + 3)
            .map(|i| (format!("innocent-{i}"), body(true)))
            .collect()
    };
    env.publish(&innocents(0)).await;
    let mut bodies = Vec::new();
    for raw in raws {
        let b = body(raw.valid);
        let mut p = RawPublisher::connect(&amqp_url(), uploader_frame_max).await;
        p.publish(b"", env.queue.as_bytes(), &raw.props, &b)
            .await
            .unwrap_or_else(|e| panic!("{}: the broker takes it: {e}", raw.name));
        p.close().await;
        bodies.push(b);
    }
    env.publish(&innocents(3)).await;
    let valid = raws.iter().filter(|r| r.valid).count() as i64;
    let invalid = raws.len() as i64 - valid;

    let port = free_port();
    let url = format!("{}{url_query}", amqp_url());
    let listen = format!("127.0.0.1:{port}");
    let daemon = Mutex::new(run_daemon(
        env,
        &[("EDC__AMQP__URL", &url), ("EDC__HTTP__LISTEN", &listen)],
    ));
    let alive = || {
        let mut d = daemon.lock().unwrap();
        if let Some(status) = d.exited() {
            panic!(
                "the daemon died ({status}); its last lines:\n{}",
                d.tail(20)
            );
        }
    };
    let what = format!("{} stored, {invalid} rejected", 6 + valid);
    wait_for(&what, WAIT, || async {
        alive();
        env.count("SELECT count(*) FROM crf_records").await == 6 + valid
            && env.count("SELECT count(*) FROM rejections").await == invalid
    })
    .await;
    wait_for("the work queue empty", WAIT, || async {
        alive();
        env.ready(&env.queue).await == 0
    })
    .await;
    wait_for("every dead letter in its queue", WAIT, || async {
        alive();
        i64::from(env.ready(&env.dlq).await) == invalid
    })
    .await;
    alive();
    let metrics = scrape(port).await;
    assert_eq!(
        metrics.count("edc_broker_reconnects_total"),
        0,
        "the connection held"
    );
    let exit = daemon.into_inner().unwrap().stop(WAIT).await;
    assert!(exit.success(), "{}", exit.stderr);

    // Each record once, the innocent ones included; one rejection row per invalid message.
    assert_eq!(
        env.count("SELECT count(DISTINCT (record_id, version)) FROM crf_records")
            .await,
        6 + valid
    );
    assert_eq!(
        env.count("SELECT count(*) FROM crf_records WHERE message_id LIKE 'innocent-%'")
            .await,
        6
    );
    assert_eq!(
        env.count("SELECT count(DISTINCT body_sha256) FROM rejections")
            .await,
        invalid
    );

    // The dlq tools read them.
    let list = edc(env, &[], &["dlq", "list", "--output", "json"]);
    assert!(list.status.success(), "{}", text(&list));
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["matching"], json!(invalid), "{list}");
    let show = edc(
        env,
        &[],
        &["dlq", "show", "--output", "json", "--count", "50"],
    );
    assert!(show.status.success(), "{}", text(&show));
    let shown = String::from_utf8_lossy(&show.stdout).lines().count() as i64;
    assert_eq!(shown, invalid, "{}", text(&show));

    // Each dead letter: ours (kind and reason), its body byte for byte, each invalid body once.
    let letters = env.drain_dlq().await;
    for l in &letters {
        assert_eq!(header(l, "x-edc-error-kind").as_deref(), Some("invalid"));
        assert_eq!(header(l, "x-edc-error").as_deref(), Some(REASON));
    }
    let mut kept: Vec<&Vec<u8>> = letters.iter().map(|l| &l.delivery.data).collect();
    let mut sent: Vec<&Vec<u8>> = raws
        .iter()
        .zip(&bodies)
        .filter(|(r, _)| !r.valid)
        .map(|(_, b)| b)
        .collect();
    kept.sort();
    sent.sort();
    assert!(
        kept == sent,
        "the dead letters keep their bodies byte for byte"
    );
    let ours: i64 = env
        .db()
        .await
        .query_one(
            "SELECT count(*) FROM rejections WHERE kind = 'invalid' AND reason = $1",
            &[&REASON],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ours, invalid, "one rejection row each, with our reason");
    letters
}

#[tokio::test]
async fn forty_kib_of_headers_from_an_uploader_that_negotiated_128_kib() {
    let env = TestEnv::new().await;
    let headers = table(&[(b"bulk", long_string(&vec![b'x'; 40 * 1024]))]);
    let raws = [Raw::new(
        "40 KiB of headers",
        Props::new().headers(headers),
        true,
    )];
    scenario(&env, BROKER_FRAME_MAX, "", &raws).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_header_frame_at_the_brokers_limit_whatever_frame_max_the_daemon_negotiated() {
    // The broker adds `x-delivery-count` on delivery: a frame published 5 bytes under its limit
    // arrives over it, even at the broker's own maximum; 8192 is the least the client asks for.
    for query in ["", "?frame_max=131072", "?frame_max=8192"] {
        let env = TestEnv::new().await;
        let props = |n: usize| {
            Props::new()
                .delivery_mode(2)
                .headers(table(&[(b"bulk".as_slice(), long_string(&vec![b'x'; n]))]))
        };
        let n = BROKER_FRAME_MAX as usize - 5 - header_frame_len(&props(0));
        assert_eq!(header_frame_len(&props(n)), BROKER_FRAME_MAX as usize - 5);
        let raws = [Raw::new("a frame at the limit", props(n), true)];
        scenario(&env, BROKER_FRAME_MAX, query, &raws).await;
        env.cleanup().await;
    }
}

#[tokio::test]
async fn header_arrays_and_tables_nested_100_and_20000_deep() {
    let env = TestEnv::new().await;
    let deep = |v: Vec<u8>| Props::new().headers(table(&[(b"deep", v)]));
    // Invalid bodies only with small headers: the dead letter copies them (see the test below).
    let raws = [
        Raw::new("arrays 100 deep", deep(nested_arrays(100)), false),
        Raw::new("arrays 20,000 deep", deep(nested_arrays(20_000)), true),
        Raw::new("tables 100 deep", deep(nested_tables(100)), false),
        Raw::new("tables 20,000 deep", deep(nested_tables(20_000)), true),
    ];
    let letters = scenario(&env, BROKER_FRAME_MAX, "", &raws).await;
    // The dead letters keep the header: parsed 32 levels deep (the header table the first), and
    // what lies past that, whole, as the bytes of its encoding.
    for l in &letters {
        let h = l.delivery.properties.headers().as_ref().unwrap();
        let mut v = h.inner().get("deep").unwrap();
        let mut levels = 1;
        let rest = loop {
            v = match v {
                AMQPValue::FieldArray(a) => &a.as_slice()[0],
                AMQPValue::FieldTable(t) => t.inner().get("").unwrap(),
                AMQPValue::ByteArray(b) => break b.as_slice(),
                other => panic!("unexpected {other:?}"),
            };
            levels += 1;
        };
        assert_eq!(levels, 32);
        let level = if rest[0] == b'A' { 5 } else { 6 };
        assert_eq!(rest.len(), level * (100 - 31) - usize::from(level == 6));
    }
    env.cleanup().await;
}

#[tokio::test]
async fn short_strings_that_are_not_utf8_in_any_property_or_header_key() {
    let env = TestEnv::new().await;
    let mut raws = Vec::new();
    for (i, p) in Prop::SHORT_STRINGS.into_iter().enumerate() {
        let bytes = [b"\xff\xfe-".as_slice(), format!("{p:?}").as_bytes()].concat();
        let props = Props::new().short(p, &bytes);
        if matches!(p, Prop::Expiration | Prop::UserId) {
            // The broker checks these two itself, and refuses the publish.
            let mut publisher = RawPublisher::connect(&amqp_url(), BROKER_FRAME_MAX).await;
            let refused = publisher
                .publish(b"", env.queue.as_bytes(), &props, &body(true))
                .await
                .unwrap_err();
            assert!(refused.contains("406"), "{p:?}: {refused}");
            continue;
        }
        raws.push(Raw::new(&format!("{p:?}"), props, i % 2 == 0));
    }
    let key = table(&[(b"key-\xc3\x28", long_string(b"v"))]);
    raws.push(Raw::new("a header key", Props::new().headers(key), false));
    let value = table(&[(b"traceparent", long_string(b"00-\xff\xfe"))]);
    raws.push(Raw::new(
        "a header value",
        Props::new().headers(value),
        true,
    ));
    scenario(&env, BROKER_FRAME_MAX, "", &raws).await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_dead_letter_of_headers_larger_than_our_frame_leaves_the_largest_out() {
    let env = TestEnv::new().await;
    let with = |name: &[u8], v: Vec<u8>| {
        Props::new().headers(table(&[(name, v), (b"x-site-batch", long_string(b"kept"))]))
    };
    let raws = [
        Raw::new(
            "40 KiB",
            with(b"bulk", long_string(&vec![b'x'; 40 * 1024])),
            false,
        ),
        Raw::new("20,000 deep", with(b"deep", nested_arrays(20_000)), false),
    ];
    let letters = scenario(&env, BROKER_FRAME_MAX, "", &raws).await;
    for l in &letters {
        let h = l.delivery.properties.headers().as_ref().unwrap().inner();
        assert!(!h.contains_key("bulk") && !h.contains_key("deep"));
        assert_eq!(header(l, "x-site-batch").as_deref(), Some("kept"));
        assert_eq!(
            h.get("x-edc-headers-dropped"),
            Some(&AMQPValue::LongLongInt(1))
        );
    }
    env.cleanup().await;
}
