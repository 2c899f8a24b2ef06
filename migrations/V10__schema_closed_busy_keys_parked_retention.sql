-- Three things:
--
-- 1. Nobody but the owner creates objects in this schema. CREATE on it is revoked from PUBLIC
--    (PostgreSQL 15 does that for `public` in a new cluster; older clusters, and clusters upgraded
--    from them, still grant it) and from the runtime role; edc_grant_runtime() does both again at
--    every migration run. The functions that run with the owner's rights find what they use by name:
--    whoever may create an object where they look could plant one that they would then run as the
--    owner.
--
-- 2. Every function that runs as the owner (SECURITY DEFINER), and every function of ours they
--    call, names this schema's tables, views and functions with the schema: `@s.` below stands for
--    it (`public.`, quoted if needed) and is replaced when this migration runs. Nothing of the same
--    name in pg_catalog or pg_temp can stand in for them, whatever the search_path. Built-in
--    functions, operators and types are left unqualified: search_path is pinned to pg_catalog
--    first, and with CREATE revoked only the owner could add an overload of one here.
--
-- 3. Group commit without head-of-line blocking. A record whose key (record_id, version) another
--    session is storing at that moment (another replica storing the same record) made the whole
--    statement wait on that session's uncommitted row, up to lock_timeout, and every record of the
--    group with it. Now every writer takes a transaction-level advisory lock per key
--    (lock_record_key: the two-int4 form, a key space apart from the single bigint locks of the
--    migrations and the relay, from a 64-bit hash of record_id and version). The group statement
--    only tries them: a key whose lock another session holds is "busy", is not written and comes
--    back as such, and the daemon stores it again alone, on a statement of its own that waits for
--    the lock (and costs only that record). The statement keeps its shape: one call, one
--    transaction, idempotent on the key. A writer that takes no advisory lock (a replica of the
--    previous version during a rolling upgrade) is still bounded by lock_timeout, and its
--    ingest_records (V7's arguments) now waits for the advisory locks of its keys, in a fixed
--    order, before it writes.
--
-- 4. Retention: prune_working_tables refuses a horizon under one day, and prunes outbox_parked (the
--    events the broker refused for good) by a horizon of its own, only when one is given.

-- 1. CREATE on this schema, and who else holds it. Returns what it did, or why it could not, in
-- words (edc_grant_runtime returns it to the migrating command, which logs it).
CREATE FUNCTION edc_revoke_schema_create(p_role text) RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
    schema_name text := current_schema();
    schema_owner oid := (SELECT nspowner FROM pg_catalog.pg_namespace WHERE nspname = current_schema());
    said text := '';
BEGIN
    IF pg_catalog.has_schema_privilege('public', schema_name, 'CREATE') THEN
        IF pg_catalog.pg_has_role(schema_owner, 'USAGE') THEN
            EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', schema_name);
            said := format('CREATE on schema %s revoked from PUBLIC. ', schema_name);
        ELSE
            said := format('WARNING: every role may create objects in schema %s, and %s, not its '
                           'owner, may not revoke that: a DBA should run REVOKE CREATE ON SCHEMA %I '
                           'FROM PUBLIC. ', schema_name, current_user, schema_name);
        END IF;
    END IF;
    IF p_role IS NOT NULL AND p_role <> '' AND p_role <> current_user
       AND EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = p_role)
       AND pg_catalog.has_schema_privilege(p_role, schema_name, 'CREATE') THEN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM %I', schema_name, p_role);
        said := said || format('CREATE on schema %s revoked from %s. ', schema_name, p_role);
        IF pg_catalog.has_schema_privilege(p_role, schema_name, 'CREATE') THEN
            said := said || format('WARNING: the runtime role %s may still create objects in '
                                   'schema %s (a grant %s did not make, or one of its roles): a '
                                   'DBA should revoke it. ', p_role, schema_name, current_user);
        END IF;
    END IF;
    RETURN said;
END $fn$;
REVOKE EXECUTE ON FUNCTION edc_revoke_schema_create(text) FROM PUBLIC;

DO $migration$
DECLARE
    said text := edc_revoke_schema_create(NULL);
BEGIN
    IF said LIKE 'WARNING%' THEN
        RAISE WARNING '%', said;
    END IF;
END $migration$;

-- 2, 3 and 4: the functions, with `@s.` replaced by this schema and `@path` by the pinned
-- search_path.
DO $migration$
DECLARE
    s text := quote_ident(current_schema()) || '.';
    path text := format('pg_catalog, %I, pg_temp', current_schema());
    ddl text;
BEGIN
    FOREACH ddl IN ARRAY ARRAY[

-- The advisory lock that says "this session is storing this record's key": tried (false when
-- another session holds it) or waited for (bounded by lock_timeout). Released at COMMIT or ROLLBACK.
$ddl$
CREATE FUNCTION @s.lock_record_key(p_record_id uuid, p_version integer, p_wait boolean)
RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    h bigint := uuid_hash_extended(p_record_id, p_version);
BEGIN
    IF p_wait THEN
        PERFORM pg_advisory_xact_lock((h >> 32)::integer, h::bit(32)::integer);
        RETURN true;
    END IF;
    RETURN pg_try_advisory_xact_lock((h >> 32)::integer, h::bit(32)::integer);
END $fn$
$ddl$,

-- As in V6, qualified.
$ddl$
CREATE OR REPLACE FUNCTION @s.batch_add(p_batch uuid, p_expected integer, p_accepted integer,
                                        p_queried integer, p_duplicates integer, p_kind text,
                                        p_dead integer)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO @s.batches (batch_id, expected) VALUES (p_batch, p_expected) ON CONFLICT DO NOTHING;
    IF p_expected IS NOT NULL THEN
        UPDATE @s.batches SET expected = p_expected WHERE batch_id = p_batch AND expected IS NULL;
    END IF;
    INSERT INTO @s.batch_counts AS t (batch_id, shard, accepted, queried, duplicates,
                                      dead_lettered, dead_lettered_total)
    VALUES (p_batch, pg_backend_pid(), p_accepted, p_queried, p_duplicates,
            CASE WHEN p_dead > 0 THEN jsonb_build_object(p_kind, p_dead) ELSE '{}'::jsonb END, p_dead)
    ON CONFLICT (batch_id, shard) DO UPDATE SET
        accepted            = t.accepted + EXCLUDED.accepted,
        queried             = t.queried + EXCLUDED.queried,
        duplicates          = t.duplicates + EXCLUDED.duplicates,
        dead_lettered       = CASE WHEN p_dead > 0
                                   THEN jsonb_set(t.dead_lettered, ARRAY[p_kind],
                                        to_jsonb(coalesce((t.dead_lettered ->> p_kind)::integer, 0) + p_dead))
                                   ELSE t.dead_lettered END,
        dead_lettered_total = t.dead_lettered_total + EXCLUDED.dead_lettered_total,
        updated_at          = now();
END $fn$
$ddl$,

-- As in V7, qualified, with one more argument and one more column. p_skip_busy: a key whose lock
-- another session holds is not written, and comes back with busy = true (no other column set);
-- false: each key's lock is waited for, in a fixed order, so no record comes back busy.
$ddl$
CREATE FUNCTION @s.ingest_records(
    p_ord int[], p_record_id uuid[], p_version int[], p_message_id text[], p_study text[],
    p_site text[], p_subject text[], p_visit text[], p_form text[], p_items jsonb[],
    p_pseudonyms jsonb[], p_birth_year text[], p_status text[], p_protocol_version text[],
    p_captured_at timestamptz[], p_entered_by text[], p_batch_id uuid[], p_batch_size int[],
    p_payload_sha256 text[], p_reply_to text[], p_correlation_id text[], p_headers jsonb[],
    p_key_id text,
    q_record_id uuid[], q_version int[], q_check_id text[], q_message text[],
    a_record_id uuid[], a_version int[], a_alert_id text[],
    p_skip_busy boolean)
RETURNS TABLE (ord int, inserted boolean, busy boolean, existing_sha256 text,
               existing_message_id text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @path SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
    ins_ids uuid[];
    ins_versions int[];
    busy_ords int[];
    k record;
BEGIN
    IF p_skip_busy THEN
        SELECT array_agg(t.ord) INTO busy_ords
        FROM unnest(p_ord, p_record_id, p_version) AS t(ord, record_id, version)
        WHERE NOT @s.lock_record_key(t.record_id, t.version, false);
    ELSE
        FOR k IN SELECT t.record_id, t.version
                 FROM unnest(p_record_id, p_version) AS t(record_id, version)
                 ORDER BY uuid_hash_extended(t.record_id, t.version)
        LOOP
            PERFORM @s.lock_record_key(k.record_id, k.version, true);
        END LOOP;
    END IF;
    busy_ords := coalesce(busy_ords, '{}');

    WITH input AS (
        SELECT * FROM unnest(p_ord, p_record_id, p_version, p_message_id, p_study, p_site,
            p_subject, p_visit, p_form, p_items, p_pseudonyms, p_birth_year, p_status,
            p_protocol_version, p_captured_at, p_entered_by, p_batch_id, p_payload_sha256,
            p_reply_to, p_correlation_id, p_headers)
        AS t(ord, record_id, version, message_id, study, site, subject, visit, form, items,
             pseudonyms, birth_year, status, protocol_version, captured_at, entered_by, batch_id,
             payload_sha256, reply_to, correlation_id, headers)
        WHERE t.ord <> ALL (busy_ords)
    ), ins AS (
        INSERT INTO @s.crf_records AS c (record_id, version, message_id, study, site, subject,
            visit, form, items, pseudonyms, pseudonym_key_id, birth_year, status,
            protocol_version, captured_at, entered_by, batch_id, payload_sha256)
        SELECT t.record_id, t.version, t.message_id, t.study, t.site, t.subject, t.visit, t.form,
            t.items, t.pseudonyms, p_key_id, t.birth_year, t.status, t.protocol_version,
            t.captured_at, t.entered_by, t.batch_id, t.payload_sha256
        FROM input t ORDER BY t.ord
        ON CONFLICT ON CONSTRAINT crf_records_pkey DO NOTHING
        RETURNING c.record_id, c.version, c.received_at
    ), stored AS (
        SELECT t.*, ins.received_at FROM input t JOIN ins ON ins.record_id = t.record_id AND ins.version = t.version
    ), findings AS (
        SELECT * FROM unnest(q_record_id, q_version, q_check_id, q_message)
        AS q(record_id, version, check_id, message)
    ), raised AS (
        SELECT * FROM unnest(a_record_id, a_version, a_alert_id) AS a(record_id, version, alert_id)
    ), audit AS (
        INSERT INTO @s.audit_trail (record_id, version, action, actor, message_id, payload_sha256, detail)
        SELECT s.record_id, s.version, 'created', s.entered_by, s.message_id, s.payload_sha256,
            'status=' || s.status || ' protocol=' || s.protocol_version
        FROM stored s ORDER BY s.ord
    ), queries AS (
        INSERT INTO @s.data_queries (record_id, version, check_id, message)
        SELECT f.record_id, f.version, f.check_id, f.message
        FROM findings f JOIN stored s ON s.record_id = f.record_id AND s.version = f.version
    ), alerted AS (
        INSERT INTO @s.alerts (alert_id, record_id, version, study, site, subject, visit, form)
        SELECT r.alert_id, s.record_id, s.version, s.study, s.site, s.subject, s.visit, s.form
        FROM raised r JOIN stored s ON s.record_id = r.record_id AND s.version = r.version
        ON CONFLICT DO NOTHING
    ), events AS (
        -- One row for the whole transaction. In order: per record, its record event, then its
        -- alerts, then its callback.
        INSERT INTO @s.outbox (events)
        SELECT jsonb_agg(e.event ORDER BY e.ord, e.seq) FROM (
            SELECT s.ord, 0 AS seq, @s.outbox_event('record.' || s.status, NULL, NULL, s.headers,
                jsonb_build_object('type', 'record.' || s.status, 'study', s.study, 'site', s.site,
                    'subject', s.subject, 'form', s.form, 'visit', s.visit,
                    'record_id', s.record_id, 'version', s.version, 'status', s.status,
                    'protocol_version', s.protocol_version, 'batch_id', s.batch_id,
                    'captured_at', s.captured_at, 'received_at', s.received_at,
                    'findings', (SELECT coalesce(jsonb_agg(jsonb_build_object('check', f.check_id,
                                    'message', f.message)), '[]'::jsonb)
                                 FROM findings f
                                 WHERE f.record_id = s.record_id AND f.version = s.version))) AS event
            FROM stored s
            UNION ALL
            SELECT s.ord, 1, @s.outbox_event('alert.raised', NULL, NULL, s.headers,
                jsonb_build_object('type', 'alert.raised', 'alert', r.alert_id, 'study', s.study,
                    'site', s.site, 'subject', s.subject, 'form', s.form, 'visit', s.visit,
                    'record_id', s.record_id, 'version', s.version, 'status', s.status,
                    'captured_at', s.captured_at, 'raised_at', s.received_at))
            FROM raised r JOIN stored s ON s.record_id = r.record_id AND s.version = r.version
            UNION ALL
            SELECT s.ord, 2, @s.outbox_event(s.reply_to, s.reply_to, s.correlation_id, s.headers,
                jsonb_build_object('type', 'outcome', 'outcome', s.status, 'record_id', s.record_id,
                    'version', s.version, 'message_id', s.message_id))
            FROM stored s WHERE s.reply_to IS NOT NULL
        ) e
        HAVING count(*) > 0
    )
    SELECT array_agg(i.record_id), array_agg(i.version) INTO ins_ids, ins_versions FROM ins i;

    PERFORM @s.batch_add(b.batch_id, b.expected, b.accepted, b.queried, 0, NULL, 0)
    FROM (SELECT t.batch_id, max(t.batch_size) AS expected,
                 count(*) FILTER (WHERE t.status = 'accepted')::int AS accepted,
                 count(*) FILTER (WHERE t.status = 'queried')::int AS queried
          FROM unnest(p_record_id, p_version, p_batch_id, p_batch_size, p_status)
               AS t(record_id, version, batch_id, batch_size, status)
          JOIN unnest(ins_ids, ins_versions) AS k(record_id, version)
               ON k.record_id = t.record_id AND k.version = t.version
          WHERE t.batch_id IS NOT NULL
          GROUP BY t.batch_id
          ORDER BY t.batch_id) b;   -- a fixed lock order: no deadlock between concurrent batches

    -- The stored row of a record not inserted (and not busy) is looked up by its key (see V5).
    RETURN QUERY
    SELECT i.ord, k.record_id IS NOT NULL, i.ord = ANY (busy_ords), s.payload_sha256, s.message_id
    FROM unnest(p_ord, p_record_id, p_version) AS i(ord, record_id, version)
    LEFT JOIN unnest(ins_ids, ins_versions) AS k(record_id, version)
           ON k.record_id = i.record_id AND k.version = i.version
    LEFT JOIN LATERAL (
        SELECT c.payload_sha256, c.message_id FROM @s.crf_records c
        WHERE k.record_id IS NULL AND i.ord <> ALL (busy_ords)
          AND c.record_id = i.record_id AND c.version = i.version
        OFFSET 0
    ) s ON true
    ORDER BY i.ord;
END $fn$
$ddl$,

-- The ingest_records of V7, which replicas of the previous version call during a rolling upgrade:
-- the same answer, from the call above, waiting for each key's lock.
$ddl$
CREATE OR REPLACE FUNCTION @s.ingest_records(
    p_ord int[], p_record_id uuid[], p_version int[], p_message_id text[], p_study text[],
    p_site text[], p_subject text[], p_visit text[], p_form text[], p_items jsonb[],
    p_pseudonyms jsonb[], p_birth_year text[], p_status text[], p_protocol_version text[],
    p_captured_at timestamptz[], p_entered_by text[], p_batch_id uuid[], p_batch_size int[],
    p_payload_sha256 text[], p_reply_to text[], p_correlation_id text[], p_headers jsonb[],
    p_key_id text,
    q_record_id uuid[], q_version int[], q_check_id text[], q_message text[],
    a_record_id uuid[], a_version int[], a_alert_id text[])
RETURNS TABLE (ord int, inserted boolean, existing_sha256 text, existing_message_id text)
LANGUAGE sql SECURITY DEFINER SET search_path = @path AS $fn$
    SELECT r.ord, r.inserted, r.existing_sha256, r.existing_message_id
    FROM @s.ingest_records(p_ord, p_record_id, p_version, p_message_id, p_study, p_site,
        p_subject, p_visit, p_form, p_items, p_pseudonyms, p_birth_year, p_status,
        p_protocol_version, p_captured_at, p_entered_by, p_batch_id, p_batch_size,
        p_payload_sha256, p_reply_to, p_correlation_id, p_headers, p_key_id,
        q_record_id, q_version, q_check_id, q_message, a_record_id, a_version, a_alert_id,
        false) r
$fn$
$ddl$,

-- As in V7 (with V9's rights), qualified.
$ddl$
CREATE OR REPLACE FUNCTION @s.note_duplicate(p_batch uuid, p_expected integer, p_record_id uuid,
                                             p_version integer, p_message_id text,
                                             p_reply_to text, p_correlation_id text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = @path AS $fn$
DECLARE
    first_time boolean;
BEGIN
    INSERT INTO @s.duplicates_seen (message_id, record_id, version, batch_id)
    VALUES (p_message_id, p_record_id, p_version, p_batch)
    ON CONFLICT DO NOTHING
    RETURNING true INTO first_time;
    IF first_time IS NULL THEN
        RETURN;
    END IF;
    IF p_batch IS NOT NULL THEN
        PERFORM @s.batch_add(p_batch, p_expected, 0, 0, 1, NULL, 0);
    END IF;
    IF p_reply_to IS NOT NULL THEN
        INSERT INTO @s.outbox (events) VALUES (jsonb_build_array(@s.outbox_event(p_reply_to,
            p_reply_to, p_correlation_id, NULL, jsonb_build_object('type', 'outcome',
            'outcome', 'duplicate', 'record_id', p_record_id, 'version', p_version,
            'message_id', p_message_id))));
    END IF;
END $fn$
$ddl$,

$ddl$
CREATE OR REPLACE FUNCTION @s.record_rejection(p_message_id text, p_record_id uuid,
                                               p_batch_id uuid, p_batch_size integer,
                                               p_kind text, p_reason text, p_attempts integer,
                                               p_body_sha256 text, p_consumer text,
                                               p_reply_to text, p_correlation_id text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = @path AS $fn$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO @s.rejections (message_id, record_id, batch_id, kind, reason, attempts,
                               body_sha256, consumer)
    VALUES (p_message_id, p_record_id, p_batch_id, p_kind, p_reason, p_attempts, p_body_sha256,
            p_consumer)
    ON CONFLICT DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RETURN;   -- a redelivery of a message already rejected
    END IF;
    IF p_batch_id IS NOT NULL THEN
        PERFORM @s.batch_add(p_batch_id, p_batch_size, 0, 0, 0, p_kind, 1);
    END IF;
    IF p_reply_to IS NOT NULL THEN
        INSERT INTO @s.outbox (events) VALUES (jsonb_build_array(@s.outbox_event(p_reply_to,
            p_reply_to, p_correlation_id, NULL, jsonb_build_object('type', 'outcome',
            'outcome', 'dead_lettered', 'kind', p_kind, 'reason', p_reason,
            'record_id', p_record_id, 'message_id', p_message_id))));
    END IF;
END $fn$
$ddl$,

$ddl$
CREATE OR REPLACE FUNCTION @s.complete_batches() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @path AS $fn$
DECLARE
    open_batch record;
    r @s.batch_receipts;
    n integer := 0;
BEGIN
    FOR open_batch IN
        SELECT b.batch_id
        FROM @s.batches b
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(c.accepted + c.queried + c.duplicates + c.dead_lettered_total), 0)
                AS outcomes
            FROM @s.batch_counts c WHERE c.batch_id = b.batch_id) c
        WHERE b.completed_at IS NULL AND b.expected IS NOT NULL AND c.outcomes >= b.expected
    LOOP
        UPDATE @s.batches SET completed_at = now()
        WHERE batch_id = open_batch.batch_id AND completed_at IS NULL;
        IF FOUND THEN
            SELECT * INTO r FROM @s.batch_receipts WHERE batch_id = open_batch.batch_id;
            INSERT INTO @s.outbox (events) VALUES (jsonb_build_array(@s.outbox_event(
                'batch.completed', NULL, NULL, NULL, jsonb_build_object('type', 'batch.completed',
                'batch_id', r.batch_id, 'expected', r.expected, 'accepted', r.accepted,
                'queried', r.queried, 'duplicates', r.duplicates,
                'dead_lettered', r.dead_lettered, 'completed_at', now()))));
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $fn$
$ddl$,

-- Pruning (edc-ingest prune, retention.*), as V9's, with outbox_parked. Each horizon, in seconds,
-- may be null (that part is not pruned) and is otherwise at least one day: a shorter one would
-- count a re-upload again on its receipt, forget the crash count of a message still being
-- redelivered, or drop an undelivered event an operator has not looked at yet.
$ddl$
CREATE FUNCTION @s.prune_working_tables(p_seconds double precision,
                                        p_parked_seconds double precision,
                                        OUT n_duplicates_seen bigint,
                                        OUT n_batch_count_rows bigint,
                                        OUT n_delivery_ledger bigint,
                                        OUT n_outbox_parked bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @path AS $fn$
DECLARE
    horizon timestamptz := now() - make_interval(secs => p_seconds);
    b record;
BEGIN
    IF p_seconds < 86400 OR p_parked_seconds < 86400 THEN
        RAISE EXCEPTION 'a retention horizon must be at least one day'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    n_duplicates_seen := 0;
    n_batch_count_rows := 0;
    n_delivery_ledger := 0;
    n_outbox_parked := 0;
    IF p_seconds IS NOT NULL THEN
        DELETE FROM @s.duplicates_seen WHERE seen_at < horizon;
        GET DIAGNOSTICS n_duplicates_seen = ROW_COUNT;
        FOR b IN
            SELECT c.batch_id, sum(c.accepted)::int AS accepted, sum(c.queried)::int AS queried,
                   sum(c.duplicates)::int AS duplicates,
                   coalesce((SELECT jsonb_object_agg(k, n) FROM (
                       SELECT e.key AS k, sum(e.value::integer) AS n
                       FROM @s.batch_counts c2, jsonb_each_text(c2.dead_lettered) e
                       WHERE c2.batch_id = c.batch_id GROUP BY e.key) d), '{}'::jsonb) AS dead_lettered,
                   sum(c.dead_lettered_total)::int AS dead_lettered_total,
                   max(c.updated_at) AS updated_at, count(*) AS n
            FROM @s.batch_counts c JOIN @s.batches bt USING (batch_id)
            WHERE bt.completed_at < horizon
            GROUP BY c.batch_id HAVING count(*) > 1
        LOOP
            DELETE FROM @s.batch_counts WHERE batch_id = b.batch_id;
            INSERT INTO @s.batch_counts (batch_id, shard, accepted, queried, duplicates,
                                         dead_lettered, dead_lettered_total, updated_at)
            VALUES (b.batch_id, 0, b.accepted, b.queried, b.duplicates, b.dead_lettered,
                    b.dead_lettered_total, b.updated_at);
            n_batch_count_rows := n_batch_count_rows + b.n - 1;
        END LOOP;
        DELETE FROM @s.delivery_ledger WHERE last_seen < horizon;
        GET DIAGNOSTICS n_delivery_ledger = ROW_COUNT;
    END IF;
    IF p_parked_seconds IS NOT NULL THEN
        DELETE FROM @s.outbox_parked WHERE parked_at < now() - make_interval(secs => p_parked_seconds);
        GET DIAGNOSTICS n_outbox_parked = ROW_COUNT;
    END IF;
END $fn$
$ddl$,

-- V9's, which replicas of the previous version call: the working tables only.
$ddl$
CREATE OR REPLACE FUNCTION @s.prune_working_tables(p_seconds double precision,
                                                   OUT n_duplicates_seen bigint,
                                                   OUT n_batch_count_rows bigint,
                                                   OUT n_delivery_ledger bigint)
LANGUAGE sql SECURITY DEFINER SET search_path = @path AS $fn$
    SELECT p.n_duplicates_seen, p.n_batch_count_rows, p.n_delivery_ledger
    FROM @s.prune_working_tables(p_seconds, NULL) p
$fn$
$ddl$,

-- V9's grants, with CREATE on the schema revoked from PUBLIC and from the role every time, and
-- this schema's objects qualified.
$ddl$
CREATE OR REPLACE FUNCTION @s.edc_grant_runtime(p_role text) RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
    s text := quote_ident(current_schema());
    fn regprocedure;
    closed text := @s.edc_revoke_schema_create(p_role);
BEGIN
    IF p_role IS NULL OR p_role = '' THEN
        RETURN closed || 'no runtime role set (postgres.runtime_role): no grants made';
    END IF;
    IF p_role = current_user THEN
        RETURN closed || format('the runtime role %s is the owner: no grants needed', p_role);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = p_role) THEN
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = current_user AND (rolcreaterole OR rolsuper)) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', p_role);
        ELSE
            RETURN closed || format('the runtime role %s does not exist and %s may not create '
                          'it: no grants made (the daemon must run as the owner, or a DBA '
                          'creates the role: README, "Least privilege")', p_role, current_user);
        END IF;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = p_role AND (rolsuper OR rolbypassrls)) THEN
        RETURN closed || format('the runtime role %s is a superuser: no grants made', p_role);
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
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s.delivery_ledger TO %I', s, p_role);
    EXECUTE format('GRANT SELECT, UPDATE, DELETE ON %s.outbox TO %I', s, p_role);
    -- Appended to, never changed: events the broker refused, and what the dlq tools did.
    EXECUTE format('GRANT SELECT, INSERT ON %1$s.outbox_parked, %1$s.dlq_actions TO %2$I', s, p_role);
    -- Read: the open batches (a gauge), the receipts (batch status), the stored records (dlq
    -- replay says whether a dead letter is a duplicate or a conflict), the rejections (the dlq
    -- tools tell edc-ingest's own dead letters by their row; status counts them by kind), the
    -- batch counters (status shows the open batches' progress).
    EXECUTE format('GRANT SELECT ON %1$s.batches, %1$s.batch_receipts, %1$s.crf_records, '
                   '%1$s.crf_current, %1$s.rejections, %1$s.batch_counts TO %2$I', s, p_role);
    RETURN closed || format('runtime role %s: privileges granted', p_role);
END $fn$
$ddl$

    ] LOOP
        EXECUTE replace(replace(ddl, '@s.', s), '@path', path);
    END LOOP;
END $migration$;

REVOKE EXECUTE ON FUNCTION ingest_records(int[], uuid[], int[], text[], text[], text[], text[],
    text[], text[], jsonb[], jsonb[], text[], text[], text[], timestamptz[], text[], uuid[], int[],
    text[], text[], text[], jsonb[], text, uuid[], int[], text[], text[], uuid[], int[], text[],
    boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION prune_working_tables(double precision, double precision) FROM PUBLIC;
