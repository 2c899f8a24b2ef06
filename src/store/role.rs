//! Least privilege: the grants of the runtime role (made by the migrating role, the owner), the
//! check, at start and while the database gate is closed, that the daemon's own role can do its
//! work, and who that role is: the owner of the evidence or a superuser is refused unless
//! `postgres.allow_owner_runtime` says it on purpose.

use tokio_postgres::Client;

/// Grants the runtime role (`postgres.runtime_role`) its privileges, as the owner, with the
/// migrations' `edc_grant_runtime` (V9, V10), which also revokes CREATE on the schema from PUBLIC
/// and from that role. What it did is logged; what it could not do, as a warning.
pub async fn grant(client: &Client, runtime_role: &str) -> Result<(), tokio_postgres::Error> {
    let said: String = client
        .query_one("SELECT edc_grant_runtime($1)", &[&runtime_role])
        .await?
        .get(0);
    if said.contains("WARNING") {
        tracing::warn!(runtime_role, "{said}");
    } else {
        tracing::info!(runtime_role, "{said}");
    }
    Ok(())
}

/// What the daemon's role may not do.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Everything the daemon needs.
    Ready,
    /// The schema is not (fully) there yet: migrations still to run.
    NotMigrated,
    /// The privileges it lacks, as `PRIVILEGE on object`.
    Lacks(Vec<String>),
}

/// The table privileges `run` needs besides executing the owner's functions (see V9).
const TABLES: &[(&str, &str)] = &[
    ("delivery_ledger", "SELECT"),
    ("delivery_ledger", "INSERT"),
    ("delivery_ledger", "UPDATE"),
    ("delivery_ledger", "DELETE"),
    ("outbox", "SELECT"),
    ("outbox", "UPDATE"),
    ("outbox", "DELETE"),
    ("outbox_parked", "INSERT"),
    ("batches", "SELECT"),
];

/// Whether the role of `client` can do the daemon's work: execute every function that writes the
/// records (those that run as their owner), and use its working tables.
pub async fn check(client: &Client) -> Result<Check, tokio_postgres::Error> {
    let (tables, privileges): (Vec<&str>, Vec<&str>) = TABLES.iter().copied().unzip();
    let rows = client
        .query(
            "SELECT w.t, w.p, c.oid IS NULL, c.oid IS NOT NULL AND NOT has_table_privilege(c.oid, w.p)
             FROM unnest($1::text[], $2::text[]) AS w(t, p)
             LEFT JOIN pg_class c ON c.oid = to_regclass(w.t)
             UNION ALL
             SELECT p.oid::regprocedure::text, 'EXECUTE', false, NOT has_function_privilege(p.oid, 'EXECUTE')
             FROM pg_proc p
             WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
               AND p.prosecdef
             UNION ALL
             SELECT 'functions that run as the owner', '', NOT EXISTS (
                 SELECT FROM pg_proc p
                 WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
                   AND p.prosecdef), false",
            &[&tables, &privileges],
        )
        .await?;
    if rows.iter().any(|r| r.get::<_, bool>(2)) {
        return Ok(Check::NotMigrated);
    }
    let lacks: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, bool>(3))
        .map(|r| format!("{} on {}", r.get::<_, String>(1), r.get::<_, String>(0)))
        .collect();
    Ok(if lacks.is_empty() {
        Check::Ready
    } else {
        Check::Lacks(lacks)
    })
}

/// Who the daemon's role is, as far as least privilege goes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// `current_user`.
    pub role: String,
    /// The schema the daemon works in (`current_schema()`).
    pub schema: String,
    pub superuser: bool,
    /// The owner of the evidence tables (`crf_records`), if the role is that owner or may become
    /// it (a member of the owning role); none before the schema is migrated.
    pub owns_evidence: Option<String>,
    /// Whether the role owns the schema, or may become its owner: it could drop any table in it.
    pub owns_schema: bool,
    /// Whether the role may create objects in the schema (CREATE, through PUBLIC or a grant).
    pub may_create: bool,
}

/// Connections the server would still accept from this role's kind of session now:
/// `max_connections` less the reserved ones (`superuser_reserved_connections`, and
/// `reserved_connections` from PostgreSQL 16) less the client sessions open, this one not counted.
pub async fn connection_room(client: &Client) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('max_connections')::bigint
                  - current_setting('superuser_reserved_connections')::bigint
                  - coalesce(current_setting('reserved_connections', true), '0')::bigint
                  - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
                  + 1",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Reads who the role of `client` is.
pub async fn identity(client: &Client) -> Result<Identity, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_user::text, current_schema()::text,
                    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
                    (SELECT pg_get_userbyid(c.relowner)::text FROM pg_class c
                     WHERE c.oid = to_regclass('crf_records')
                       AND pg_has_role(current_user, c.relowner, 'MEMBER')),
                    coalesce((SELECT pg_has_role(current_user, n.nspowner, 'MEMBER')
                              FROM pg_namespace n WHERE n.nspname = current_schema()), false),
                    coalesce(has_schema_privilege(current_schema(), 'CREATE'), false)",
            &[],
        )
        .await?;
    Ok(Identity {
        role: row.get(0),
        schema: row.get::<_, Option<String>>(1).unwrap_or_default(),
        superuser: row.get::<_, Option<bool>>(2).unwrap_or(false),
        owns_evidence: row.get(3),
        owns_schema: row.get(4),
        may_create: row.get(5),
    })
}

/// What a start makes of an [`Identity`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A role that owns nothing: it runs (with a warning for each excess it still holds).
    Runs { warnings: Vec<String> },
    /// The owner, or a superuser, allowed on purpose (`postgres.allow_owner_runtime`): it runs,
    /// with this loud warning.
    OwnerAllowed(String),
    /// The owner, or a superuser, not allowed: the start stops with this reason.
    Refused(String),
}

impl Identity {
    /// Why this role is more than the daemon needs: it is a superuser, or owns the evidence or
    /// the schema. None for a role that owns nothing.
    fn too_powerful(&self) -> Option<String> {
        if self.superuser {
            return Some("is a superuser".to_string());
        }
        if let Some(owner) = &self.owns_evidence {
            return Some(if *owner == self.role {
                "owns the evidence tables".to_string()
            } else {
                format!("may act as `{owner}`, the owner of the evidence tables")
            });
        }
        if self.owns_schema {
            return Some(format!(
                "owns schema `{}` (or may act as its owner), so it may drop any table in it",
                self.schema
            ));
        }
        None
    }

    /// Refuse, allow loudly, or run: `allow_owner_runtime` is `postgres.allow_owner_runtime`.
    pub fn verdict(&self, allow_owner_runtime: bool) -> Verdict {
        let role = &self.role;
        if let Some(why) = self.too_powerful() {
            if allow_owner_runtime {
                return Verdict::OwnerAllowed(format!(
                    "the daemon runs as `{role}`, which {why} (postgres.allow_owner_runtime is \
                     true): a flaw in the daemon, or whoever takes over its process, can change or \
                     remove stored records, audit rows and the triggers that guard them. Run it \
                     as a login role that is a member of the runtime role instead (README, \
                     \"Least privilege\")"
                ));
            }
            return Verdict::Refused(format!(
                "postgres.url logs in as `{role}`, which {why}: the daemon does not run with the \
                 power to change or remove the evidence. Run it as a login role that is a member \
                 of the runtime role (postgres.runtime_role), and migrate as the owner with \
                 postgres.migrate_url (README, \"Least privilege\"); or set \
                 postgres.allow_owner_runtime: true to run as the owner on purpose"
            ));
        }
        let mut warnings = Vec::new();
        if self.may_create {
            warnings.push(format!(
                "the daemon's role `{role}` may create objects in schema `{}` (CREATE, granted to \
                 it or to PUBLIC): `edc-ingest migrate` as the owner revokes it where it may; \
                 otherwise a DBA should (README, \"Least privilege\")",
                self.schema
            ));
        }
        Verdict::Runs { warnings }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> Identity {
        Identity {
            role: "edc_app".into(),
            schema: "public".into(),
            ..Identity::default()
        }
    }

    #[test]
    fn a_role_that_owns_nothing_runs_and_is_warned_of_create_on_the_schema() {
        assert_eq!(runtime().verdict(false), Verdict::Runs { warnings: vec![] });
        let creator = Identity {
            may_create: true,
            ..runtime()
        };
        let Verdict::Runs { warnings } = creator.verdict(false) else {
            panic!("runs");
        };
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("may create objects in schema `public`"));
    }

    #[test]
    fn the_owner_or_a_superuser_is_refused_unless_allowed_on_purpose() {
        let cases = [
            (
                Identity {
                    owns_evidence: Some("edc_app".into()),
                    ..runtime()
                },
                "which owns the evidence tables",
            ),
            (
                Identity {
                    owns_evidence: Some("edc_owner".into()),
                    ..runtime()
                },
                "may act as `edc_owner`, the owner of the evidence tables",
            ),
            (
                Identity {
                    owns_schema: true,
                    ..runtime()
                },
                "owns schema `public`",
            ),
            (
                Identity {
                    superuser: true,
                    ..runtime()
                },
                "is a superuser",
            ),
        ];
        for (identity, why) in cases {
            match identity.verdict(false) {
                Verdict::Refused(reason) => {
                    assert!(reason.contains(why), "{reason}");
                    assert!(
                        reason.contains("postgres.allow_owner_runtime: true"),
                        "{reason}"
                    );
                }
                other => panic!("{identity:?}: {other:?}"),
            }
            match identity.verdict(true) {
                Verdict::OwnerAllowed(warning) => {
                    assert!(warning.contains(why), "{warning}");
                    assert!(warning.contains("can change or remove"), "{warning}");
                }
                other => panic!("{identity:?}: {other:?}"),
            }
        }
    }
}
