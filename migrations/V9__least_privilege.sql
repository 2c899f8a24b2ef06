-- Least privilege: the role that runs the daemon need not own the schema. The owner (the role that
-- migrates) keeps the tables, the triggers that make audit_trail append-only and the functions;
-- the runtime role (postgres.runtime_role, a NOLOGIN group role the daemon's login role belongs
-- to) gets what the daemon and the tools need, and nothing on the evidence tables but SELECT where
-- a tool reads.
--
-- Every write to the evidence (crf_records, audit_trail, data_queries, alerts, rejections, the
-- receipts) goes through the functions below, which now run with their owner's rights (SECURITY
-- DEFINER): the runtime role may EXECUTE them and holds no INSERT, UPDATE, DELETE or TRUNCATE on
-- those tables, nor any right to alter or drop a table or a trigger. Each function runs with a
-- fixed search_path (this schema, then pg_temp last), so no object of the caller's can stand in for
-- one of ours. Nobody else may execute them (REVOKE ... FROM PUBLIC).
--
-- Where the daemon and the owner are one role (every deployment before this one), nothing changes
-- for it: a function running as its owner runs as the daemon's own role.

DO $$
DECLARE
    fn regprocedure;
    path text := format('pg_catalog, %I, pg_temp', current_schema());
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
          AND (p.proname IN ('note_duplicate', 'record_rejection', 'complete_batches')
               -- the current ingest_records (V7); the older one (V5) stays as it was, for
               -- replicas of the previous version during a rolling upgrade (they run as the owner)
               OR (p.proname = 'ingest_records' AND 'p_key_id' = ANY (p.proargnames)))
    LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER SET search_path = %s', fn, path);
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
    END LOOP;
END $$;

-- Pruning of the working tables (edc-ingest prune, retention.working_tables), as one call, so that
-- the runtime role needs no DELETE on duplicates_seen and batch_counts. Same rules as before:
-- re-upload ids and crash counts older than the horizon go; the counter rows of a batch completed
-- before it are folded into one row (shard 0) holding their sums, so its receipt reads the same.
CREATE FUNCTION prune_working_tables(p_seconds double precision,
                                     OUT n_duplicates_seen bigint,
                                     OUT n_batch_count_rows bigint,
                                     OUT n_delivery_ledger bigint)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    horizon timestamptz := now() - make_interval(secs => p_seconds);
    b record;
BEGIN
    DELETE FROM duplicates_seen WHERE seen_at < horizon;
    GET DIAGNOSTICS n_duplicates_seen = ROW_COUNT;
    n_batch_count_rows := 0;
    FOR b IN
        SELECT c.batch_id, sum(c.accepted)::int AS accepted, sum(c.queried)::int AS queried,
               sum(c.duplicates)::int AS duplicates,
               coalesce((SELECT jsonb_object_agg(k, n) FROM (
                   SELECT e.key AS k, sum(e.value::integer) AS n
                   FROM batch_counts c2, jsonb_each_text(c2.dead_lettered) e
                   WHERE c2.batch_id = c.batch_id GROUP BY e.key) d), '{}'::jsonb) AS dead_lettered,
               sum(c.dead_lettered_total)::int AS dead_lettered_total,
               max(c.updated_at) AS updated_at, count(*) AS n
        FROM batch_counts c JOIN batches bt USING (batch_id)
        WHERE bt.completed_at < horizon
        GROUP BY c.batch_id HAVING count(*) > 1
    LOOP
        DELETE FROM batch_counts WHERE batch_id = b.batch_id;
        INSERT INTO batch_counts (batch_id, shard, accepted, queried, duplicates, dead_lettered,
                                  dead_lettered_total, updated_at)
        VALUES (b.batch_id, 0, b.accepted, b.queried, b.duplicates, b.dead_lettered,
                b.dead_lettered_total, b.updated_at);
        n_batch_count_rows := n_batch_count_rows + b.n - 1;
    END LOOP;
    DELETE FROM delivery_ledger WHERE last_seen < horizon;
    GET DIAGNOSTICS n_delivery_ledger = ROW_COUNT;
END $$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION prune_working_tables(double precision) SET search_path = %s',
                   format('pg_catalog, %I, pg_temp', current_schema()));
END $$;
REVOKE EXECUTE ON FUNCTION prune_working_tables(double precision) FROM PUBLIC;

-- The grants of the runtime role, made by `edc-ingest migrate` (and a start that migrates) after
-- the migrations, every time, as the owner: a role created after this migration ran still gets
-- them at the next migration run, and a later migration that adds a table replaces this function.
-- They are exactly what is listed here: everything else the role holds on this schema's tables,
-- sequences and functions is revoked first. Returns what it did, in words.
--
-- The role is created (NOLOGIN) if it does not exist and the migrating role may create roles;
-- otherwise nothing is granted, and the daemon must then run as the owner, as before.
CREATE FUNCTION edc_grant_runtime(p_role text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    s text := quote_ident(current_schema());
    fn regprocedure;
BEGIN
    IF p_role IS NULL OR p_role = '' THEN
        RETURN 'no runtime role set (postgres.runtime_role): no grants made';
    END IF;
    IF p_role = current_user THEN
        RETURN format('the runtime role %s is the owner: no grants needed', p_role);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = p_role) THEN
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = current_user AND (rolcreaterole OR rolsuper)) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', p_role);
        ELSE
            RETURN format('the runtime role %s does not exist and %s may not create it: no grants '
                          'made (the daemon must run as the owner, or a DBA creates the role: '
                          'README, "Least privilege")', p_role, current_user);
        END IF;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = p_role AND (rolsuper OR rolbypassrls)) THEN
        RETURN format('the runtime role %s is a superuser: no grants made', p_role);
    END IF;

    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %s FROM %I', s, p_role);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA %s FROM %I', s, p_role);
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA %s FROM %I', s, p_role);
    IF NOT has_schema_privilege(p_role, current_schema(), 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %s TO %I', s, p_role);
    END IF;

    -- The writes: the functions that run as the owner.
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
          AND p.prosecdef
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, p_role);
    END LOOP;
    -- The daemon's own working tables: the crash ledger (written before a redelivered message
    -- runs, removed once it is settled) and the outbox (read, locked and removed by the relay).
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON delivery_ledger TO %I', p_role);
    EXECUTE format('GRANT SELECT, UPDATE, DELETE ON outbox TO %I', p_role);
    -- Appended to, never changed: events the broker refused, and what the dlq tools did.
    EXECUTE format('GRANT SELECT, INSERT ON outbox_parked, dlq_actions TO %I', p_role);
    -- Read: the open batches (a gauge), the receipts (batch status), the stored records (dlq
    -- replay says whether a dead letter is a duplicate or a conflict).
    EXECUTE format('GRANT SELECT ON batches, batch_receipts, crf_records, crf_current TO %I', p_role);
    RETURN format('runtime role %s: privileges granted', p_role);
END $$;
REVOKE EXECUTE ON FUNCTION edc_grant_runtime(text) FROM PUBLIC;
