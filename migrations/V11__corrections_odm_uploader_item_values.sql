-- Corrections, ODM sources, the authenticated uploader and a long view of the values:
--
-- 1. crf_records: the repeat keys of an ODM form instance (visit_repeat: StudyEventRepeatKey,
--    form_repeat: FormRepeatKey; null for an edc.crf.v1 record), where a record came from
--    (source: 'edc.crf.v1' or 'odm'), and the status `removed`: a form withdrawn by an ODM
--    TransactionType Remove is a new version with that status and no items. Nothing is deleted.
-- 2. audit_trail: uploaded_by, the AMQP user_id RabbitMQ verified against the publishing
--    connection's user (null when the message had none), beside the claimed actor (entered_by);
--    reason_for_change, the keyed pseudonym of the reason an ODM AuditRecord gives (free text an
--    uploader wrote, protected like a phi item: its text is never stored).
-- 3. data_queries: status `resolved` and the version that resolved it. A later version of a
--    record whose checks no longer raise a query closes the open queries of earlier versions
--    with the same check; one that still fails leaves them open (and raises its own).
-- 4. ingest_records with the new columns; V10's arguments still work (a replica of the previous
--    version during a rolling upgrade), its records stored as edc.crf.v1 without an uploader.
-- 5. item_values: one row per stored value of each record's latest version, readable by the
--    runtime role (edc_grant_runtime) and by any role an operator grants SELECT on it alone: the
--    view runs with its owner's rights, so such a role reads no table.

ALTER TABLE crf_records
    ADD COLUMN visit_repeat text,
    ADD COLUMN form_repeat  text,
    ADD COLUMN source       text NOT NULL DEFAULT 'edc.crf.v1'
        CHECK (source IN ('edc.crf.v1', 'odm'));
ALTER TABLE crf_records DROP CONSTRAINT crf_records_status_check;
ALTER TABLE crf_records ADD CONSTRAINT crf_records_status_check
    CHECK (status IN ('accepted', 'queried', 'removed'));

-- crf_current lists its columns as they were when it was made: the new ones are added at its end.
CREATE OR REPLACE VIEW crf_current AS
    SELECT DISTINCT ON (record_id) *
    FROM crf_records
    ORDER BY record_id, version DESC;

ALTER TABLE audit_trail
    ADD COLUMN uploaded_by       text,
    ADD COLUMN reason_for_change text;   -- a keyed pseudonym (hex), never the text

ALTER TABLE data_queries
    ADD COLUMN resolved_by_version integer,
    ADD COLUMN resolved_at         timestamptz;
ALTER TABLE data_queries DROP CONSTRAINT data_queries_status_check;
ALTER TABLE data_queries ADD CONSTRAINT data_queries_status_check
    CHECK (status IN ('open', 'answered', 'closed', 'resolved'));

-- 5. The values of each record's latest version, one row each: the form's own items (item_group
-- and group_repeat null), then the items of each row of its repeating groups. value: the stored
-- canonical form as text (a number as PostgreSQL writes it, true/false, a phi item's pseudonym);
-- null for an item deliberately left empty. A removed version has no items, hence no rows.
CREATE VIEW item_values AS
    SELECT c.study, c.site, c.subject, c.visit, c.visit_repeat, c.form, c.form_repeat,
           c.record_id, c.version, c.status, v.item_group, v.group_repeat, v.item, v.value
    FROM crf_current c
    CROSS JOIN LATERAL (
        SELECT NULL::text AS item_group, NULL::text AS group_repeat, i.key AS item,
               i.value #>> '{}' AS value
        FROM jsonb_each(c.items) i
        WHERE jsonb_typeof(i.value) <> 'object'
        UNION ALL
        SELECT g.key, r.key, ri.key, ri.value #>> '{}'
        FROM jsonb_each(c.items) g
        CROSS JOIN LATERAL jsonb_each(g.value) r
        CROSS JOIN LATERAL jsonb_each(r.value) ri
        WHERE jsonb_typeof(g.value) = 'object' AND jsonb_typeof(r.value) = 'object'
    ) v;

-- 4. The functions, with `@s.` replaced by this schema and `@path` by the pinned search_path
-- (see V10).
DO $migration$
DECLARE
    s text := quote_ident(current_schema()) || '.';
    path text := format('pg_catalog, %I, pg_temp', current_schema());
    ddl text;
BEGIN
    FOREACH ddl IN ARRAY ARRAY[

-- As in V10, with five more arguments: the repeat keys, the source, the uploader and the reason
-- for change of each record (null arrays: none), and the resolution of earlier data queries.
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
    p_skip_busy boolean,
    p_visit_repeat text[], p_form_repeat text[], p_source text[], p_uploaded_by text[],
    p_reason_for_change text[])
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
            p_reply_to, p_correlation_id, p_headers, p_visit_repeat, p_form_repeat, p_source,
            p_uploaded_by, p_reason_for_change)
        AS t(ord, record_id, version, message_id, study, site, subject, visit, form, items,
             pseudonyms, birth_year, status, protocol_version, captured_at, entered_by, batch_id,
             payload_sha256, reply_to, correlation_id, headers, visit_repeat, form_repeat, source,
             uploaded_by, reason_for_change)
        WHERE t.ord <> ALL (busy_ords)
    ), ins AS (
        INSERT INTO @s.crf_records AS c (record_id, version, message_id, study, site, subject,
            visit, form, items, pseudonyms, pseudonym_key_id, birth_year, status,
            protocol_version, captured_at, entered_by, batch_id, payload_sha256, visit_repeat,
            form_repeat, source)
        SELECT t.record_id, t.version, t.message_id, t.study, t.site, t.subject, t.visit, t.form,
            t.items, t.pseudonyms, p_key_id, t.birth_year, t.status, t.protocol_version,
            t.captured_at, t.entered_by, t.batch_id, t.payload_sha256, t.visit_repeat,
            t.form_repeat, coalesce(t.source, 'edc.crf.v1')
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
        INSERT INTO @s.audit_trail (record_id, version, action, actor, message_id, payload_sha256,
                                    detail, uploaded_by, reason_for_change)
        SELECT s.record_id, s.version, 'created', s.entered_by, s.message_id, s.payload_sha256,
            'status=' || s.status || ' protocol=' || s.protocol_version, s.uploaded_by,
            s.reason_for_change
        FROM stored s ORDER BY s.ord
    ), resolved AS (
        -- A later version whose checks no longer raise a query closes the open ones of earlier
        -- versions (a removal closes nothing: the form is withdrawn, not corrected).
        UPDATE @s.data_queries q
        SET status = 'resolved', resolved_by_version = s.version, resolved_at = now()
        FROM stored s
        WHERE q.record_id = s.record_id AND q.version < s.version AND q.status = 'open'
          AND s.status <> 'removed'
          AND NOT EXISTS (SELECT FROM findings f
                          WHERE f.record_id = s.record_id AND f.version = s.version
                            AND f.check_id = q.check_id)
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

-- V10's ingest_records, which replicas of the previous version call during a rolling upgrade:
-- the call above, with no repeat keys, uploader nor reason.
$ddl$
CREATE OR REPLACE FUNCTION @s.ingest_records(
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
LANGUAGE sql SECURITY DEFINER SET search_path = @path AS $fn$
    SELECT r.ord, r.inserted, r.busy, r.existing_sha256, r.existing_message_id
    FROM @s.ingest_records(p_ord, p_record_id, p_version, p_message_id, p_study, p_site,
        p_subject, p_visit, p_form, p_items, p_pseudonyms, p_birth_year, p_status,
        p_protocol_version, p_captured_at, p_entered_by, p_batch_id, p_batch_size,
        p_payload_sha256, p_reply_to, p_correlation_id, p_headers, p_key_id,
        q_record_id, q_version, q_check_id, q_message, a_record_id, a_version, a_alert_id,
        p_skip_busy, NULL::text[], NULL::text[], NULL::text[], NULL::text[], NULL::text[]) r
$fn$
$ddl$,

-- V10's grants, and SELECT on item_values.
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
    -- The long view of the latest values, for SQL readers (see V11).
    EXECUTE format('GRANT SELECT ON %1$s.item_values TO %2$I', s, p_role);
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
    boolean, text[], text[], text[], text[], text[]) FROM PUBLIC;
