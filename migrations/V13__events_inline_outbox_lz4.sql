-- Cheaper events: the outbox cost PostgreSQL more than the records it announces.
--
-- 1. ingest_records builds each event inline instead of calling outbox_event() once per event: a
--    SQL function with a FROM clause is not inlined, so every event ran as a statement of its own.
--    The events are the same: same fields, same order, an id of their own each (drawn in a
--    subquery, one per row), `body` carrying event_id and occurred_at.
-- 2. An outbox row (one per transaction, every event of it: tens of kilobytes under load) is
--    written once, read once and deleted: it is compressed with lz4 rather than pglz, which cost
--    more CPU than building the events. On a server built without lz4 it is stored uncompressed.
--
-- Rolling upgrades: the arguments stay V11's, and the relay reads the rows as before.

DO $migration$
BEGIN
    ALTER TABLE outbox ALTER COLUMN events SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    ALTER TABLE outbox ALTER COLUMN events SET STORAGE EXTERNAL;
END $migration$;

-- With `@s.` replaced by this schema and `@path` by the pinned search_path (see V10).
DO $migration$
DECLARE
    s text := quote_ident(current_schema()) || '.';
    path text := format('pg_catalog, %I, pg_temp', current_schema());
BEGIN
    EXECUTE replace(replace($ddl$
CREATE OR REPLACE FUNCTION @s.ingest_records(
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
        -- alerts, then its callback. Each event as outbox_event() (V7) makes it, written out here
        -- so that PostgreSQL builds it inline: the subquery draws each event's own id.
        INSERT INTO @s.outbox (events)
        SELECT jsonb_agg(jsonb_build_object('event_id', e.id, 'routing_key', e.routing_key,
                   'reply_to', e.reply_to, 'correlation_id', e.correlation_id,
                   'headers', e.headers,
                   'body', e.body || jsonb_build_object('event_id', e.id, 'occurred_at', now()))
               ORDER BY e.ord, e.seq)
        FROM (SELECT u.*, gen_random_uuid() AS id FROM (
            SELECT s.ord, 0 AS seq, 'record.' || s.status AS routing_key, NULL::text AS reply_to,
                NULL::text AS correlation_id, s.headers,
                jsonb_build_object('type', 'record.' || s.status, 'study', s.study, 'site', s.site,
                    'subject', s.subject, 'form', s.form, 'visit', s.visit,
                    'record_id', s.record_id, 'version', s.version, 'status', s.status,
                    'protocol_version', s.protocol_version, 'batch_id', s.batch_id,
                    'captured_at', s.captured_at, 'received_at', s.received_at,
                    'findings', (SELECT coalesce(jsonb_agg(jsonb_build_object('check', f.check_id,
                                    'message', f.message)), '[]'::jsonb)
                                 FROM findings f
                                 WHERE f.record_id = s.record_id AND f.version = s.version)) AS body
            FROM stored s
            UNION ALL
            SELECT s.ord, 1, 'alert.raised', NULL, NULL, s.headers,
                jsonb_build_object('type', 'alert.raised', 'alert', r.alert_id, 'study', s.study,
                    'site', s.site, 'subject', s.subject, 'form', s.form, 'visit', s.visit,
                    'record_id', s.record_id, 'version', s.version, 'status', s.status,
                    'captured_at', s.captured_at, 'raised_at', s.received_at)
            FROM raised r JOIN stored s ON s.record_id = r.record_id AND s.version = r.version
            UNION ALL
            SELECT s.ord, 2, s.reply_to, s.reply_to, s.correlation_id, s.headers,
                jsonb_build_object('type', 'outcome', 'outcome', s.status, 'record_id', s.record_id,
                    'version', s.version, 'message_id', s.message_id)
            FROM stored s WHERE s.reply_to IS NOT NULL
        ) u) e
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
$ddl$, '@s.', s), '@path', path);
END $migration$;
