//! Unit tests of loading: the layers, the defaults, unknown fields and the errors.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const DEV: (&str, &str) = ("EDC__DEV_INSECURE_PSEUDONYM_KEY", "true");

#[test]
fn defaults_load_with_a_dev_key() {
    let s = Settings::load_with_env(None, env(&[DEV])).unwrap();
    assert_eq!(s.workers, 128);
    assert_eq!(s.amqp.queue, "edc.records");
    assert_eq!(s.shutdown_grace, Duration::from_secs(25));
    assert_eq!(s.max_message_bytes, 256 * 1024);
    // What a replica opens: one committer, the workers' share of 4, the gate's probe and the
    // backlog gauge; the relay's is one more.
    assert_eq!(s.pool_connections(), 7);
    assert!(s.workers <= s.postgres.pool_size);
}

#[test]
fn the_pool_opens_no_more_than_pool_size() {
    let s = Settings::load_with_env(
        None,
        env(&[
            DEV,
            ("EDC__WORKERS", "3"),
            ("EDC__POSTGRES__POOL_SIZE", "3"),
            ("EDC__POSTGRES__WORKER_CONNECTIONS", "8"),
        ]),
    )
    .unwrap();
    assert_eq!(s.pool_connections(), 3);
    let zero = Settings::load_with_env(
        None,
        env(&[DEV, ("EDC__POSTGRES__WORKER_CONNECTIONS", "0")]),
    );
    assert!(
        zero.is_err_and(|e| e.to_string().contains("worker_connections")),
        "a share of none is refused"
    );
}

#[test]
fn environment_overrides_nested_keys() {
    let s = Settings::load_with_env(
        None,
        env(&[
            DEV,
            ("EDC__WORKERS", "3"),
            ("EDC__POSTGRES__POOL_SIZE", "5"),
            ("EDC__AMQP__URL", "amqp://u:p@h:1/%2f"),
            ("EDC__JOB_TIMEOUT", "500ms"),
        ]),
    )
    .unwrap();
    assert_eq!(s.workers, 3);
    assert_eq!(s.postgres.pool_size, 5);
    assert_eq!(s.amqp.url.expose(), "amqp://u:p@h:1/%2f");
    assert_eq!(s.job_timeout, Duration::from_millis(500));
}

#[test]
fn the_fast_lane_follows_the_work_queue_unless_named() {
    let s =
        Settings::load_with_env(None, env(&[DEV, ("EDC__AMQP__QUEUE", "site3.records")])).unwrap();
    assert_eq!(s.amqp.urgent_queue, "site3.records.urgent");
    let s = Settings::load_with_env(None, env(&[DEV, ("EDC__AMQP__URGENT_QUEUE", "sae")])).unwrap();
    assert_eq!(s.amqp.urgent_queue, "sae");
}

#[test]
fn unknown_environment_key_is_an_error() {
    let err = Settings::load_with_env(None, env(&[DEV, ("EDC__WORKRES", "3")])).unwrap_err();
    assert!(err.to_string().contains("workres"), "{err}");
}

#[test]
fn unknown_file_key_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "postgres:\n  pool_sise: 4\n").unwrap();
    let err = Settings::load_with_env(Some(&path), env(&[DEV])).unwrap_err();
    assert!(err.to_string().contains("pool_sise"), "{err}");
}

#[test]
fn workers_above_pool_size_names_both_numbers() {
    let err = Settings::load_with_env(
        None,
        env(&[
            DEV,
            ("EDC__WORKERS", "12"),
            ("EDC__POSTGRES__POOL_SIZE", "4"),
        ]),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("(12)") && text.contains("(4)"), "{text}");
}

#[test]
fn settings_load_without_a_key_for_the_commands_that_need_none() {
    // The key is checked by the commands that pseudonymise (see `Pseudonymizer::from_settings`).
    let s = Settings::load_with_env(None, env(&[])).unwrap();
    assert!(s.pseudonym_key.is_none() && s.pseudonym_key_file.is_none());
}

#[test]
fn bad_duration_is_explained() {
    let err =
        Settings::load_with_env(None, env(&[DEV, ("EDC__SHUTDOWN_GRACE", "soon")])).unwrap_err();
    assert!(err.to_string().contains("25s"), "{err}");
}

#[test]
fn secrets_never_print() {
    let s = Settings::load_with_env(
        None,
        env(&[
            DEV,
            ("EDC__POSTGRES__URL", "postgres://edc:hunter2@db/edc"),
            ("EDC__PSEUDONYM_KEY", "k3y-k3y-k3y"),
        ]),
    )
    .unwrap();
    let shown = format!("{s:?} {}", s.describe());
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("k3y-k3y-k3y"), "{shown}");
    assert!(shown.contains("postgres://edc:***@db/edc"), "{shown}");
}

#[test]
fn only_reply_addresses_matching_the_patterns_get_an_answer() {
    let s = Settings::load_with_env(None, env(&[DEV])).unwrap();
    for ok in [
        "amq.rabbitmq.reply-to",
        "amq.rabbitmq.reply-to.g1h2AA==.6ZfUTGEz8eE=",
        "edc.reply.site-03",
    ] {
        assert!(s.amqp.reply_allowed(ok), "{ok}");
    }
    for refused in [
        "edc.records.dlq",
        "edc.records",
        "other.app.queue",
        "edc.reply",
        "",
    ] {
        assert!(!s.amqp.reply_allowed(refused), "{refused}");
    }
    assert!(glob_match("a*b*c", "aXXbYYc") && !glob_match("a*b*c", "aXXcYYb"));
    assert!(glob_match("*", "") && glob_match("abc", "abc") && !glob_match("abc", "abcd"));
}

#[test]
fn the_http_listener_takes_an_address_and_port_or_nothing() {
    let s = Settings::load_with_env(None, env(&[])).unwrap();
    assert_eq!(
        s.http.address().unwrap(),
        Some("127.0.0.1:9090".parse().unwrap())
    );
    let s = Settings::load_with_env(None, env(&[("EDC__HTTP__LISTEN", "")])).unwrap();
    assert_eq!(s.http.address().unwrap(), None);
    let s = Settings::load_with_env(None, env(&[("EDC__HTTP__LISTEN", "[::]:0")])).unwrap();
    assert_eq!(s.http.address().unwrap(), Some("[::]:0".parse().unwrap()));
    let err =
        Settings::load_with_env(None, env(&[("EDC__HTTP__LISTEN", "localhost:9090")])).unwrap_err();
    assert!(err.to_string().contains("http.listen"), "{err}");
}

#[test]
fn tls_settings_are_checked_before_anything_connects() {
    let s = Settings::load_with_env(None, env(&[DEV])).unwrap();
    assert!(!s.amqp.tls.is_set() && !s.postgres.tls.is_set());
    assert_eq!(s.postgres.runtime_role, "edc_runtime");
    let err = Settings::load_with_env(
        None,
        env(&[
            DEV,
            ("EDC__POSTGRES__TLS__CERT_FILE", "/etc/edc/client.pem"),
        ]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("postgres.tls.key_file"), "{err}");
    let err = Settings::load_with_env(
        None,
        env(&[DEV, ("EDC__AMQP__TLS__CA_FILE", "/etc/edc/ca.pem")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("amqps://"), "{err}");
    let s = Settings::load_with_env(
        None,
        env(&[
            DEV,
            ("EDC__AMQP__URL", "amqps://a@h1/%2f,amqps://a@h2/%2f"),
            ("EDC__AMQP__TLS__CA_FILE", "/etc/edc/ca.pem"),
        ]),
    )
    .unwrap();
    assert_eq!(s.amqp.tls.ca_file, Some(PathBuf::from("/etc/edc/ca.pem")));
    let err = Settings::load_with_env(
        None,
        env(&[DEV, ("EDC__POSTGRES__RUNTIME_ROLE", "x; DROP")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("runtime_role"), "{err}");
    let s =
        Settings::load_with_env(None, env(&[DEV, ("EDC__POSTGRES__RUNTIME_ROLE", "")])).unwrap();
    assert_eq!(s.postgres.runtime_role, "");
}

#[test]
fn retry_delays_grow_exponentially_up_to_the_cap() {
    let s = Settings::load_with_env(None, env(&[DEV])).unwrap();
    let d: Vec<u64> = (1..=8).map(|a| s.retry.delay_after(a).as_secs()).collect();
    assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 60, 60]);
}

#[test]
fn a_node_list_that_mixes_amqp_and_amqps_is_refused() {
    for list in [
        "amqps://a@h1/%2f,amqp://a@h2/%2f",
        "amqp://a@h1/%2f, amqps://a@h2/%2f",
        "AMQPS://a@h1/%2f,amqp://a@h2/%2f",
    ] {
        let err = Settings::load_with_env(None, env(&[DEV, ("EDC__AMQP__URL", list)])).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid(_)) && err.to_string().contains("defeats TLS"),
            "{list}: {err}"
        );
    }
    for list in [
        "amqps://a@h1/%2f,amqps://a@h2/%2f",
        "amqp://a@h1/%2f,amqp://a@h2/%2f",
    ] {
        Settings::load_with_env(None, env(&[DEV, ("EDC__AMQP__URL", list)])).unwrap();
    }
}

#[test]
fn each_database_url_takes_the_password_of_its_own_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        path.display().to_string()
    };
    let (runtime, owner) = (file("runtime", "app-pw\n"), file("owner", "owner-pw\n"));
    let s = Settings::load_with_env(
        None,
        env(&[
            DEV,
            ("EDC__POSTGRES__URL", "postgres://edc_app@db/edc"),
            ("EDC__POSTGRES__PASSWORD_FILE", &runtime),
            ("EDC__POSTGRES__MIGRATE_URL", "postgres://edc@db/edc"),
            ("EDC__POSTGRES__MIGRATE_PASSWORD_FILE", &owner),
        ]),
    )
    .unwrap();
    let password = |url: &SecretUrl| {
        url::Url::parse(url.expose())
            .unwrap()
            .password()
            .map(str::to_string)
    };
    assert_eq!(password(&s.postgres.url).as_deref(), Some("app-pw"));
    assert_eq!(
        password(s.postgres.migration_url()).as_deref(),
        Some("owner-pw")
    );
    // password_file is url's alone: a migrate_url without a file of its own keeps what it says.
    let s = Settings::load_with_env(
        None,
        env(&[
            DEV,
            ("EDC__POSTGRES__URL", "postgres://edc_app@db/edc"),
            ("EDC__POSTGRES__PASSWORD_FILE", &runtime),
            ("EDC__POSTGRES__MIGRATE_URL", "postgres://edc@db/edc"),
        ]),
    )
    .unwrap();
    assert_eq!(password(s.postgres.migration_url()), None);
    // Without migrate_url the owner is url's role: its password is url's.
    let s = Settings::load_with_env(
        None,
        env(&[
            DEV,
            ("EDC__POSTGRES__URL", "postgres://edc@db/edc"),
            ("EDC__POSTGRES__PASSWORD_FILE", &owner),
        ]),
    )
    .unwrap();
    assert_eq!(
        password(s.postgres.migration_url()).as_deref(),
        Some("owner-pw")
    );
    let err = Settings::load_with_env(
        None,
        env(&[DEV, ("EDC__POSTGRES__MIGRATE_PASSWORD_FILE", &owner)]),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("postgres.migrate_url is not"),
        "{err}"
    );
}

#[test]
fn retention_horizons_under_one_day_are_refused_and_parked_events_are_kept_by_default() {
    let s = Settings::load_with_env(None, env(&[DEV])).unwrap();
    assert_eq!(s.retention.outbox_parked, None, "parked events kept");
    assert!(!s.postgres.allow_owner_runtime, "the owner is refused");
    for key in [
        "EDC__RETENTION__WORKING_TABLES",
        "EDC__RETENTION__OUTBOX_PARKED",
    ] {
        for short in ["1ms", "23h 59m 59s"] {
            let err = Settings::load_with_env(None, env(&[DEV, (key, short)])).unwrap_err();
            let said = err.to_string();
            assert!(said.contains("at least one day"), "{key}={short}: {said}");
        }
        let s = Settings::load_with_env(None, env(&[DEV, (key, "1day")])).unwrap();
        let set = [s.retention.working_tables, s.retention.outbox_parked];
        assert!(set.contains(&Some(super::MIN_RETENTION)), "{key}");
    }
    assert!(super::check_retention("--older-than", Duration::from_secs(86_399)).is_err());
    assert!(super::check_retention("--older-than", super::MIN_RETENTION).is_ok());
    let day = super::MIN_RETENTION;
    assert_eq!(super::show_horizon(day), "1day");
    assert_eq!(super::show_horizon(90 * day), "90days");
    assert_eq!(super::show_horizon(Duration::from_secs(3600)), "1h");
}
