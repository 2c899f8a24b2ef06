//! Secrets given as files, through the real binary: each database role takes its password from a
//! file of its own (`postgres.password_file` for `url`, `postgres.migrate_password_file` for
//! `migrate_url`), and a TLS client key that its group can read, or that is reached through a
//! symbolic link, stops the start with exit code 2 before anything connects.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

fn write(dir: &tempfile::TempDir, name: &str, text: &str, mode: u32) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

/// `url` without its password, and the password it had.
fn split_password(url: &str) -> (String, String) {
    let mut u = url::Url::parse(url).unwrap();
    let password = u.password().unwrap().to_string();
    u.set_password(None).unwrap();
    (u.to_string(), password)
}

#[tokio::test]
async fn the_owner_and_the_runtime_role_each_take_the_password_of_their_own_file() {
    // Arrange: the runtime role (edc_app) and the owner (edc), neither URL holding a password.
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let runtime_base = pg_runtime_url();
    let (server, _) = runtime_base.rsplit_once('/').unwrap();
    let (runtime, runtime_password) = split_password(&format!("{server}/{}", env.db_name));
    let (owner, owner_password) = split_password(&env.db_url);
    assert_ne!(runtime_password, owner_password, "two roles, two passwords");
    let runtime_file = write(&dir, "runtime", &format!("{runtime_password}\n"), 0o400);
    let owner_file = write(&dir, "owner", &format!("{owner_password}\n"), 0o600);
    let both = [
        ("EDC__POSTGRES__URL", runtime.as_str()),
        ("EDC__POSTGRES__PASSWORD_FILE", runtime_file.as_str()),
        ("EDC__POSTGRES__MIGRATE_URL", owner.as_str()),
        ("EDC__POSTGRES__MIGRATE_PASSWORD_FILE", owner_file.as_str()),
    ];

    // Act + Assert: `migrate` runs as the owner, with the owner's file.
    let out = edc(&env, &both, &["migrate"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");

    // password_file is url's alone: without a file of its own, migrate_url has no password (the
    // server asks for one: tokio-postgres stops at "password missing").
    let out = edc(&env, &both[..3], &["migrate"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("password missing"), "{err}");

    // A file for migrate_url without a migrate_url: a configuration error, said as such.
    let out = edc(
        &env,
        &[("EDC__POSTGRES__MIGRATE_PASSWORD_FILE", owner_file.as_str())],
        &["migrate"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("postgres.migrate_url is not"), "{err}");

    // The daemon itself: migrations as the owner, records stored as the runtime role.
    env.publish(&[("pw-1", bytes(&record(vs_items())))]).await;
    let daemon = Daemon::start(env.settings(&both));
    daemon.wait_settled(1, WAIT).await;
    let summary = daemon.stop().await;
    assert_eq!(summary.accepted + summary.queried, 1, "{summary}");
    // url held no password: only its file let the runtime role in.
    assert_eq!(env.count("SELECT count(*) FROM crf_records").await, 1);
    env.cleanup().await;
}

/// A certificate and its key (any: the key's mode is refused before it is used).
fn client_pair(dir: &tempfile::TempDir, key_mode: u32) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (
        write(dir, "client.pem", &cert.cert.pem(), 0o644),
        write(
            dir,
            "client.key",
            &cert.signing_key.serialize_pem(),
            key_mode,
        ),
    )
}

#[tokio::test]
async fn a_tls_client_key_its_group_can_read_or_behind_a_link_stops_the_start() {
    let env = TestEnv::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = client_pair(&dir, 0o640);
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(&key, &link).unwrap();
    let link = link.display().to_string();
    let amqps = amqps_url();
    for setting in ["amqp", "postgres"] {
        for (key_file, expect) in [(key.as_str(), "mode 640"), (link.as_str(), "symbolic link")] {
            let (cert_var, key_var) = (
                format!("EDC__{}__TLS__CERT_FILE", setting.to_uppercase()),
                format!("EDC__{}__TLS__KEY_FILE", setting.to_uppercase()),
            );
            let mut vars = vec![
                (cert_var.as_str(), cert.as_str()),
                (key_var.as_str(), key_file),
            ];
            if setting == "amqp" {
                vars.push(("EDC__AMQP__URL", amqps.as_str()));
            }
            let started = std::time::Instant::now();
            let out = edc(&env, &vars, &["run"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{setting} {key_file}: {err}");
            assert!(
                err.contains(&format!("{setting}.tls.key_file")) && err.contains(expect),
                "{setting} {key_file}: {err}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "refused at once"
            );
        }
    }
    env.cleanup().await;
}

#[tokio::test]
async fn a_node_list_mixing_amqp_and_amqps_stops_the_start() {
    let env = TestEnv::new().await;
    let mixed = format!("{},{}", amqps_url(), amqp_url());
    let out = edc(&env, &[("EDC__AMQP__URL", mixed.as_str())], &["run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("defeats TLS"), "{err}");
    assert!(!err.contains("guest:guest"), "{err}");
    env.cleanup().await;
}
