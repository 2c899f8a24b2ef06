//! Who may do what to the schema: `run` refuses the owner of the evidence unless
//! `postgres.allow_owner_runtime` says it on purpose; nobody but the owner may create objects in
//! the schema (a migration takes CREATE from PUBLIC and the runtime role, as older clusters grant
//! it); and the functions that run with the owner's rights name every object of theirs with the
//! schema, so that nothing of the same name elsewhere can stand in.

use std::time::Duration;

use tokio_postgres::NoTls;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(60);

/// This test's database, as the runtime login (`edc_app`).
fn runtime_url(env: &TestEnv) -> String {
    let base = pg_runtime_url();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{}", env.db_name)
}

#[tokio::test]
async fn the_owner_is_refused_unless_allowed_on_purpose_and_then_warned_of() {
    let env = TestEnv::new().await;

    // Act: `run` as the owner (the role that made and migrated the database), by default.
    let out = edc(
        &env,
        &[("EDC__POSTGRES__ALLOW_OWNER_RUNTIME", "false")],
        &["run"],
    );

    // Assert: refused before consuming anything, saying why and what to do instead.
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    for needle in [
        "logs in as `edc`",
        "owns the evidence tables",
        "postgres.migrate_url",
        "postgres.runtime_role",
        "postgres.allow_owner_runtime: true",
    ] {
        assert!(said.contains(needle), "{needle}: {said}");
    }
    assert!(!said.contains("edc:edc@"), "no password: {said}");

    // Act: allowed on purpose (the test kit's default).
    let mut daemon = run_daemon(&env, &[("EDC__POSTGRES__ALLOW_OWNER_RUNTIME", "true")]);
    daemon.wait_ready(WAIT).await;

    // Assert: it runs, with a warning that says what it risks.
    let logs = daemon.stderr();
    let warning = logs
        .lines()
        .find(|l| l.contains("postgres.allow_owner_runtime is true"))
        .unwrap_or_else(|| panic!("the warning: {logs}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("can change or remove"), "{warning}");
    daemon.stop(WAIT).await;

    // The runtime login is not the owner: it runs without being allowed anything.
    let runtime = runtime_url(&env);
    let vars = [
        ("EDC__POSTGRES__URL", runtime.as_str()),
        ("EDC__POSTGRES__MIGRATE_URL", env.db_url.as_str()),
        ("EDC__POSTGRES__ALLOW_OWNER_RUNTIME", "false"),
    ];
    let mut daemon = run_daemon(&env, &vars);
    daemon.wait_ready(WAIT).await;
    assert!(!daemon.stderr().contains("allow_owner_runtime"));
    daemon.stop(WAIT).await;
    env.cleanup().await;
}

#[tokio::test]
async fn migrate_takes_create_on_the_schema_from_public_and_the_runtime_role() {
    // Arrange: the schema as an older cluster has it (PUBLIC may create in `public`), and the
    // runtime role granted CREATE too.
    let env = TestEnv::new().await;
    env.db()
        .await
        .batch_execute(
            "GRANT CREATE ON SCHEMA public TO PUBLIC; GRANT CREATE ON SCHEMA public TO edc_runtime",
        )
        .await
        .unwrap();

    // Act
    let out = edc(&env, &[], &["migrate"]);

    // Assert: both revoked, said so, and the runtime login can plant nothing in the schema.
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("CREATE on schema public revoked from PUBLIC"),
        "{said}"
    );
    assert!(
        said.contains("CREATE on schema public revoked from edc_runtime"),
        "{said}"
    );
    let (app, conn) = tokio_postgres::connect(&runtime_url(&env), NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    for sql in [
        "CREATE TABLE public.planted (x int)",
        "CREATE FUNCTION public.outbox_event(text, integer, integer, jsonb, jsonb) RETURNS jsonb
         LANGUAGE sql AS 'SELECT NULL::jsonb'",
        "CREATE VIEW public.batches_planted AS SELECT 1 AS x",
    ] {
        let e = app
            .batch_execute(sql)
            .await
            .expect_err(&format!("the runtime login may not: {sql}"));
        let code = e.as_db_error().map(|d| d.code().code().to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {e}");
    }

    // A grant the migration does not manage (to the login itself) is warned of at start.
    env.db()
        .await
        .batch_execute("GRANT CREATE ON SCHEMA public TO edc_app")
        .await
        .unwrap();
    let runtime = runtime_url(&env);
    let vars = [
        ("EDC__POSTGRES__URL", runtime.as_str()),
        ("EDC__POSTGRES__MIGRATE_URL", env.db_url.as_str()),
    ];
    let mut daemon = run_daemon(&env, &vars);
    daemon
        .wait_output("may create objects in schema `public`", WAIT)
        .await;
    daemon.stop(WAIT).await;
    env.db()
        .await
        .batch_execute("REVOKE CREATE ON SCHEMA public FROM edc_app")
        .await
        .unwrap();
    env.cleanup().await;
}

/// The text of a function body without its comments and string literals: what names objects.
fn code_of(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                out.push('\n');
            }
            '\'' => {
                // Up to the closing quote; '' is a quote inside the literal.
                while let Some(c) = chars.next() {
                    if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                out.push_str("''");
            }
            c => out.push(c),
        }
    }
    out
}

/// Every identifier of `code` with the text before it.
fn identifiers(code: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((start, &code[start..i]));
        } else {
            i += 1;
        }
    }
    out
}

#[tokio::test]
async fn functions_that_run_as_the_owner_name_every_object_of_theirs_with_the_schema() {
    let env = TestEnv::new().await;
    let db = env.db().await;
    let schema: String = db
        .query_one("SELECT current_schema()::text", &[])
        .await
        .unwrap()
        .get(0);
    let ours: Vec<String> = db
        .query(
            "SELECT relname::text FROM pg_class
             WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'v', 'm', 'p', 'f')
             UNION SELECT proname::text FROM pg_proc WHERE pronamespace = current_schema()::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // The functions that run as the owner, and the functions of ours they call.
    let checked = db
        .query(
            "SELECT oid::regprocedure::text, proname::text, prosrc, prosecdef,
                    coalesce(array_to_string(proconfig, ';'), '')
             FROM pg_proc WHERE pronamespace = current_schema()::regnamespace
               AND (prosecdef OR proname IN ('batch_add', 'outbox_event', 'lock_record_key'))",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = checked.iter().map(|r| r.get(1)).collect();
    assert!(checked.len() >= 7, "{names:?}");

    let mut unqualified = Vec::new();
    let mut called = Vec::new();
    for row in &checked {
        let (function, body, definer, config): (String, String, bool, String) =
            (row.get(0), row.get(2), row.get(3), row.get(4));
        if definer {
            let pinned = format!("search_path=pg_catalog, {schema}, pg_temp");
            assert!(
                config.split(';').any(|c| c == pinned),
                "{function}: {config}"
            );
        }
        let code = code_of(&body);
        for (at, word) in identifiers(&code) {
            if !ours.iter().any(|o| o == word) {
                continue;
            }
            if code[..at].ends_with(&format!("{schema}.")) {
                called.push(word.to_string());
            } else {
                unqualified.push(format!("{function}: {word}"));
            }
        }
    }
    assert!(
        unqualified.is_empty(),
        "not schema-qualified: {unqualified:#?}"
    );
    // Whatever of ours they call is checked too, so the rule holds all the way down.
    let functions: Vec<String> = db
        .query(
            "SELECT proname::text FROM pg_proc WHERE pronamespace = current_schema()::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for name in called.iter().filter(|c| functions.contains(c)) {
        assert!(names.contains(name), "{name} is called but not checked");
    }
    env.cleanup().await;
}

#[test]
fn the_body_scanner_drops_comments_and_literals() {
    let code = code_of("SELECT 'outbox' -- outbox\nFROM public.outbox o WHERE x = 'it''s'");
    assert_eq!(code, "SELECT '' \nFROM public.outbox o WHERE x = ''");
    let words: Vec<&str> = identifiers(&code).into_iter().map(|(_, w)| w).collect();
    assert_eq!(
        words,
        ["SELECT", "FROM", "public", "outbox", "o", "WHERE", "x"]
    );
}
