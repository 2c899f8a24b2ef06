//! `status`: queues, dead letters, open batches and replicas on one screen, and its exit code.

use super::*;

/// A stand-in replica: answers `/metrics` with `pages`, one per request, the last one again after.
/// On a thread of its own: the test's runtime is blocked while the binary runs.
fn replica(pages: Vec<String>) -> u16 {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (served, socket) in listener.incoming().enumerate() {
            let Ok(mut socket) = socket else { return };
            // The whole request first: a reply sent half-way through it breaks the client's pipe.
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let page = &pages[served.min(pages.len() - 1)];
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = socket.write_all(answer.as_bytes());
        }
    });
    port
}

fn metrics_page(accepted: u64) -> String {
    format!(
        "# TYPE edc_workers gauge\nedc_workers 8\nedc_workers_busy 3\nedc_ready 1\nedc_broker_connected 1\n\
         edc_db_gate_open 1\nedc_outbox_backlog 2\nedc_relay_lag_seconds 0.5\n\
         edc_build_info{{version=\"9.9.9\"}} 1\n\
         edc_messages_total{{outcome=\"accepted\"}} {accepted}\n\
         edc_messages_total{{outcome=\"queried\"}} 7\n\
         edc_messages_total{{outcome=\"dead_lettered\"}} 1\n\
         edc_deliveries_in_flight{{lane=\"normal\"}} 3\nedc_deliveries_in_flight{{lane=\"urgent\"}} 0\n# EOF\n"
    )
}

#[tokio::test]
async fn status_shows_the_queues_the_dead_letters_the_open_batches_and_the_replicas() {
    let env = TestEnv::new().await;
    // Two dead-lettered and one stored of a batch of 5, then three messages left waiting.
    let batch = uuid::Uuid::new_v4().to_string();
    let mut good = record(vs_items());
    good["batch"] = json!({"id": batch, "size": 5});
    env.publish(&[
        ("good", bytes(&good)),
        ("bad-1", from_site_4(&batch, 5)),
        ("bad-2", from_site_4(&batch, 5)),
    ])
    .await;
    let daemon = Daemon::start(env.settings(&[]));
    daemon.wait_settled(3, WAIT).await;
    daemon.stop().await;
    env.publish_lines(&generated(3, 9, 0.0, 0.0)).await;
    wait_for("3 messages waiting", WAIT, || async {
        env.ready(&env.queue).await == 3
    })
    .await;
    wait_for("2 dead letters", WAIT, || async {
        env.ready(&env.dlq).await == 2
    })
    .await;
    let nobody = format!("127.0.0.1:{}", free_port());

    // One reading, no daemon running: JSON.
    let out = edc(
        &env,
        &[],
        &[
            "status",
            "--window",
            "0s",
            "--metrics",
            &nobody,
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = json_of(&out);
    assert_eq!(s["window_seconds"], json!(0.0));
    assert_eq!(s["broker"]["answered"], json!(true));
    assert_eq!(
        queue_of(&s, "work"),
        json!({"role": "work", "name": env.queue, "exists": true, "ready": 3, "consumers": 0,
               "change_per_second": null})
    );
    assert_eq!(queue_of(&s, "dead_letter")["ready"], json!(2));
    assert_eq!(queue_of(&s, "urgent")["ready"], json!(0));
    assert_eq!(queue_of(&s, "delay")["exists"], json!(true));
    assert_eq!(
        s["backlog"],
        json!({"ready": 3, "change_per_second": null, "verdict": "not_consumed", "drained_in_seconds": null})
    );
    assert_eq!(s["database"]["answered"], json!(true));
    let kinds = s["database"]["dead_letters_by_kind"].as_array().unwrap();
    assert_eq!(kinds.len(), 7);
    assert!(kinds.contains(&json!({"kind": "invalid", "last_hour": 2, "last_day": 2})));
    assert!(kinds.contains(&json!({"kind": "malformed", "last_hour": 0, "last_day": 0})));
    let open = &s["database"]["open_batches"];
    assert_eq!(open["count"], json!(1));
    assert_eq!(open["oldest"][0]["batch_id"], json!(batch));
    assert_eq!(open["oldest"][0]["expected"], json!(5));
    assert_eq!(open["oldest"][0]["outcomes"], json!(3));
    let r = &s["replicas"][0];
    assert_eq!(r["url"], json!(format!("http://{nobody}/metrics")));
    assert_eq!(r["answered"], json!(false));
    assert!(
        r["error"].as_str().unwrap().contains("cannot connect"),
        "{r}"
    );
    assert_eq!(s["total_rates_per_second"], Value::Null);

    // The same as text, on one screen.
    let out = edc(
        &env,
        &[],
        &["status", "--window", "0s", "--metrics", &nobody],
    );
    assert!(out.status.success(), "{}", text(&out));
    let screen = stdout(&out);
    assert!(screen.lines().count() < 40, "{screen}");
    for expected in [
        format!("{} (work)", env.queue),
        "verdict: not consumed: 3 waiting".to_string(),
        "  invalid ".to_string(),
        format!("open batches: 1 (oldest first)\n  {batch}  3 of 5 outcomes"),
        format!("http://{nobody}/metrics: unreachable: cannot connect"),
    ] {
        assert!(screen.contains(&expected), "{expected:?} not in:\n{screen}");
    }

    // Rates: a stand-in replica whose counter grows by 300 between the two scrapes.
    let port = replica(vec![metrics_page(100), metrics_page(400)]);
    let out = edc(
        &env,
        &[],
        &[
            "status",
            "--window",
            "1s",
            "--metrics",
            &format!("127.0.0.1:{port}"),
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = json_of(&out);
    assert_eq!(s["window_seconds"], json!(1.0));
    let r = &s["replicas"][0];
    assert_eq!(r["answered"], json!(true), "{r}");
    assert_eq!(r["version"], json!("9.9.9"));
    assert_eq!(r["ready"], json!(true));
    assert_eq!(r["workers"], json!(8));
    assert_eq!(r["workers_busy"], json!(3));
    assert_eq!(r["deliveries_in_flight"], json!(3));
    assert_eq!(r["outbox_backlog"], json!(2));
    let over = r["rates_over_seconds"].as_f64().unwrap();
    assert!(over >= 0.9, "{r}");
    let rates = &r["rates_per_second"];
    let accepted = rates["accepted"].as_f64().unwrap();
    assert!((accepted * over - 300.0).abs() < 1e-6, "{r}");
    assert_eq!(rates["stored"], rates["accepted"]);
    assert_eq!(rates["queried"], json!(0.0));
    assert_eq!(s["total_rates_per_second"], *rates);
    // The queue's trend over the window: nothing consumes it, so no change.
    assert_eq!(queue_of(&s, "work")["change_per_second"], json!(0.0));
    assert_eq!(s["backlog"]["verdict"], json!("not_consumed"));

    // A real replica: the daemon drains the queue, and status reads its /metrics.
    let http = free_port();
    let listen = format!("127.0.0.1:{http}");
    let mut daemon = run_daemon(&env, &[("EDC__HTTP__LISTEN", &listen)]);
    assert_eq!(daemon.wait_ready(WAIT).await, http);
    wait_for("the queue drained", WAIT, || async {
        env.ready(&env.queue).await == 0
    })
    .await;
    let out = edc(
        &env,
        &[("EDC__HTTP__LISTEN", &listen)],
        &["status", "--window", "1s", "--output", "json"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let s = json_of(&out);
    let r = &s["replicas"][0];
    assert_eq!(
        r["url"],
        json!(format!("http://{listen}/metrics")),
        "the default replica"
    );
    assert_eq!(r["answered"], json!(true), "{r}");
    assert_eq!(r["version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(r["ready"], json!(true));
    assert_eq!(r["broker_connected"], json!(true));
    assert_eq!(r["db_gate_open"], json!(true));
    assert_eq!(r["workers"], json!(4));
    assert!(r["rates_per_second"]["stored"].is_number(), "{r}");
    assert_eq!(s["backlog"]["verdict"], json!("keeping_up"));
    assert_eq!(queue_of(&s, "work")["consumers"], json!(1));
    let exit = daemon.stop(WAIT).await;
    assert!(exit.success(), "{}", exit.stderr);
    env.cleanup().await;
}

fn queue_of(s: &Value, role: &str) -> Value {
    s["broker"]["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["role"] == json!(role))
        .unwrap()
        .clone()
}

#[tokio::test]
async fn status_exits_1_when_the_broker_or_the_database_cannot_be_read_and_shows_the_rest() {
    let env = TestEnv::new().await;
    let closed = free_port();
    let no_broker = format!("amqp://guest:guest@127.0.0.1:{closed}/%2f");
    let out = edc(
        &env,
        &[("EDC__AMQP__URL", &no_broker)],
        &["status", "--window", "0s"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let screen = stdout(&out);
    assert!(screen.contains("broker: could not be read:"), "{screen}");
    assert!(screen.contains("verdict: unknown"), "{screen}");
    assert!(
        screen.contains("open batches: none"),
        "the database part is shown: {screen}"
    );
    assert!(
        stderr(&out).contains("status: the broker could not be read"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("guest:guest"), "no password printed");

    let no_db = format!("postgres://edc:edc@127.0.0.1:{closed}/edc");
    let out = edc(
        &env,
        &[("EDC__POSTGRES__URL", &no_db)],
        &["status", "--window", "0s", "--output", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = json_of(&out);
    assert_eq!(s["database"]["answered"], json!(false));
    assert!(s["database"]["error"].is_string());
    assert_eq!(
        s["broker"]["answered"],
        json!(true),
        "the broker part is shown"
    );
    assert!(
        stderr(&out).contains("the database could not be read"),
        "{}",
        text(&out)
    );

    let out = edc(
        &env,
        &[
            ("EDC__AMQP__URL", &no_broker),
            ("EDC__POSTGRES__URL", &no_db),
        ],
        &["status", "--window", "0s"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the broker and the database could not be read"),
        "{}",
        text(&out)
    );
    env.cleanup().await;
}
