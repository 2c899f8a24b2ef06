-- Events at a small fraction of a record's cost: one outbox row per transaction, holding every
-- event and callback of that transaction in order, instead of one row per event. The relay reads a
-- row, publishes its events one by one (each still its own AMQP message with its own event_id, in
-- order), waits for their confirms together and deletes the row: one insert, one read and one
-- delete per transaction rather than per record.
--
-- With it, ingest_records() takes two more things: the pseudonymisation key's id, stored with every
-- record's pseudonyms (so a key rotation shows in the data), and for each message the AMQP headers
-- its events carry on: its W3C trace context (`traceparent`, `tracestate`).
--
-- Rolling upgrades: the previous ingest_records() (V5) stays, so replicas still running the
-- previous version keep storing records while the new ones start. Its rows have the old form
-- (routing_key and body set, events null); the relay reads both forms.

ALTER TABLE crf_records ADD COLUMN pseudonym_key_id text;   -- null: stored before key ids existed

ALTER TABLE outbox
    ALTER COLUMN routing_key DROP NOT NULL,
    ALTER COLUMN body DROP NOT NULL,
    ADD COLUMN events jsonb,
    ADD CONSTRAINT outbox_one_form CHECK ((events IS NULL) <> (body IS NULL));

COMMENT ON COLUMN outbox.events IS
    'the events of one transaction, in order: [{event_id, routing_key, reply_to, correlation_id, headers, body}]';

-- One event as the relay publishes it. `body` holds event_id and occurred_at already.
CREATE FUNCTION outbox_event(p_routing_key text, p_reply_to text, p_correlation_id text,
                             p_headers jsonb, p_body jsonb)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('event_id', e.id, 'routing_key', p_routing_key,
        'reply_to', p_reply_to, 'correlation_id', p_correlation_id, 'headers', p_headers,
        'body', p_body || jsonb_build_object('event_id', e.id, 'occurred_at', now()))
    FROM (SELECT gen_random_uuid() AS id) e
$$;

CREATE FUNCTION ingest_records(
    p_ord int[], p_record_id uuid[], p_version int[], p_message_id text[], p_study text[],
    p_site text[], p_subject text[], p_visit text[], p_form text[], p_items jsonb[],
    p_pseudonyms jsonb[], p_birth_year text[], p_status text[], p_protocol_version text[],
    p_captured_at timestamptz[], p_entered_by text[], p_batch_id uuid[], p_batch_size int[],
    p_payload_sha256 text[], p_reply_to text[], p_correlation_id text[], p_headers jsonb[],
    p_key_id text,
    q_record_id uuid[], q_version int[], q_check_id text[], q_message text[],
    a_record_id uuid[], a_version int[], a_alert_id text[])
RETURNS TABLE (ord int, inserted boolean, existing_sha256 text, existing_message_id text)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    ins_ids uuid[];
    ins_versions int[];
BEGIN
    WITH input AS (
        SELECT * FROM unnest(p_ord, p_record_id, p_version, p_message_id, p_study, p_site,
            p_subject, p_visit, p_form, p_items, p_pseudonyms, p_birth_year, p_status,
            p_protocol_version, p_captured_at, p_entered_by, p_batch_id, p_payload_sha256,
            p_reply_to, p_correlation_id, p_headers)
        AS t(ord, record_id, version, message_id, study, site, subject, visit, form, items,
             pseudonyms, birth_year, status, protocol_version, captured_at, entered_by, batch_id,
             payload_sha256, reply_to, correlation_id, headers)
    ), ins AS (
        INSERT INTO crf_records (record_id, version, message_id, study, site, subject, visit, form,
            items, pseudonyms, pseudonym_key_id, birth_year, status, protocol_version, captured_at,
            entered_by, batch_id, payload_sha256)
        SELECT t.record_id, t.version, t.message_id, t.study, t.site, t.subject, t.visit, t.form,
            t.items, t.pseudonyms, p_key_id, t.birth_year, t.status, t.protocol_version,
            t.captured_at, t.entered_by, t.batch_id, t.payload_sha256
        FROM input t ORDER BY t.ord
        ON CONFLICT ON CONSTRAINT crf_records_pkey DO NOTHING
        RETURNING crf_records.record_id, crf_records.version, crf_records.received_at
    ), stored AS (
        SELECT t.*, ins.received_at FROM input t JOIN ins ON ins.record_id = t.record_id AND ins.version = t.version
    ), findings AS (
        SELECT * FROM unnest(q_record_id, q_version, q_check_id, q_message)
        AS q(record_id, version, check_id, message)
    ), raised AS (
        SELECT * FROM unnest(a_record_id, a_version, a_alert_id) AS a(record_id, version, alert_id)
    ), audit AS (
        INSERT INTO audit_trail (record_id, version, action, actor, message_id, payload_sha256, detail)
        SELECT s.record_id, s.version, 'created', s.entered_by, s.message_id, s.payload_sha256,
            'status=' || s.status || ' protocol=' || s.protocol_version
        FROM stored s ORDER BY s.ord
    ), queries AS (
        INSERT INTO data_queries (record_id, version, check_id, message)
        SELECT f.record_id, f.version, f.check_id, f.message
        FROM findings f JOIN stored s ON s.record_id = f.record_id AND s.version = f.version
    ), alerted AS (
        INSERT INTO alerts (alert_id, record_id, version, study, site, subject, visit, form)
        SELECT r.alert_id, s.record_id, s.version, s.study, s.site, s.subject, s.visit, s.form
        FROM raised r JOIN stored s ON s.record_id = r.record_id AND s.version = r.version
        ON CONFLICT DO NOTHING
    ), events AS (
        -- One row for the whole transaction. In order: per record, its record event, then its
        -- alerts, then its callback.
        INSERT INTO outbox (events)
        SELECT jsonb_agg(e.event ORDER BY e.ord, e.seq) FROM (
            SELECT s.ord, 0 AS seq, outbox_event('record.' || s.status, NULL, NULL, s.headers,
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
            SELECT s.ord, 1, outbox_event('alert.raised', NULL, NULL, s.headers,
                jsonb_build_object('type', 'alert.raised', 'alert', r.alert_id, 'study', s.study,
                    'site', s.site, 'subject', s.subject, 'form', s.form, 'visit', s.visit,
                    'record_id', s.record_id, 'version', s.version, 'status', s.status,
                    'captured_at', s.captured_at, 'raised_at', s.received_at))
            FROM raised r JOIN stored s ON s.record_id = r.record_id AND s.version = r.version
            UNION ALL
            SELECT s.ord, 2, outbox_event(s.reply_to, s.reply_to, s.correlation_id, s.headers,
                jsonb_build_object('type', 'outcome', 'outcome', s.status, 'record_id', s.record_id,
                    'version', s.version, 'message_id', s.message_id))
            FROM stored s WHERE s.reply_to IS NOT NULL
        ) e
        HAVING count(*) > 0
    )
    SELECT array_agg(i.record_id), array_agg(i.version) INTO ins_ids, ins_versions FROM ins i;

    PERFORM batch_add(b.batch_id, b.expected, b.accepted, b.queried, 0, NULL, 0)
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

    -- The stored row of a record not inserted is looked up by its key (see V5).
    RETURN QUERY
    SELECT i.ord, k.record_id IS NOT NULL, s.payload_sha256, s.message_id
    FROM unnest(p_ord, p_record_id, p_version) AS i(ord, record_id, version)
    LEFT JOIN unnest(ins_ids, ins_versions) AS k(record_id, version)
           ON k.record_id = i.record_id AND k.version = i.version
    LEFT JOIN LATERAL (
        SELECT c.payload_sha256, c.message_id FROM crf_records c
        WHERE k.record_id IS NULL AND c.record_id = i.record_id AND c.version = i.version
        OFFSET 0
    ) s ON true
    ORDER BY i.ord;
END $$;

-- The callbacks of duplicates and rejections, and batch.completed, in the new form too.
CREATE OR REPLACE FUNCTION note_duplicate(p_batch uuid, p_expected integer, p_record_id uuid,
                                          p_version integer, p_message_id text, p_reply_to text,
                                          p_correlation_id text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    first_time boolean;
BEGIN
    INSERT INTO duplicates_seen (message_id, record_id, version, batch_id)
    VALUES (p_message_id, p_record_id, p_version, p_batch)
    ON CONFLICT DO NOTHING
    RETURNING true INTO first_time;
    IF first_time IS NULL THEN
        RETURN;
    END IF;
    IF p_batch IS NOT NULL THEN
        PERFORM batch_add(p_batch, p_expected, 0, 0, 1, NULL, 0);
    END IF;
    IF p_reply_to IS NOT NULL THEN
        INSERT INTO outbox (events) VALUES (jsonb_build_array(outbox_event(p_reply_to, p_reply_to,
            p_correlation_id, NULL, jsonb_build_object('type', 'outcome', 'outcome', 'duplicate',
            'record_id', p_record_id, 'version', p_version, 'message_id', p_message_id))));
    END IF;
END $$;

CREATE OR REPLACE FUNCTION record_rejection(p_message_id text, p_record_id uuid, p_batch_id uuid,
                                            p_batch_size integer, p_kind text, p_reason text,
                                            p_attempts integer, p_body_sha256 text,
                                            p_consumer text, p_reply_to text,
                                            p_correlation_id text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO rejections (message_id, record_id, batch_id, kind, reason, attempts, body_sha256, consumer)
    VALUES (p_message_id, p_record_id, p_batch_id, p_kind, p_reason, p_attempts, p_body_sha256, p_consumer)
    ON CONFLICT DO NOTHING
    RETURNING id INTO new_id;
    IF new_id IS NULL THEN
        RETURN;   -- a redelivery of a message already rejected
    END IF;
    IF p_batch_id IS NOT NULL THEN
        PERFORM batch_add(p_batch_id, p_batch_size, 0, 0, 0, p_kind, 1);
    END IF;
    IF p_reply_to IS NOT NULL THEN
        INSERT INTO outbox (events) VALUES (jsonb_build_array(outbox_event(p_reply_to, p_reply_to,
            p_correlation_id, NULL, jsonb_build_object('type', 'outcome',
            'outcome', 'dead_lettered', 'kind', p_kind, 'reason', p_reason,
            'record_id', p_record_id, 'message_id', p_message_id))));
    END IF;
END $$;

-- complete_batches() looked for completed batches through the batch_receipts view, which sums the
-- counters of every batch ever seen before it filters: a cost that grew with every batch, paid at
-- every relay round. Now only open batches are looked at (the batches_open index).
CREATE OR REPLACE FUNCTION complete_batches() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    open_batch record;
    r batch_receipts;
    n integer := 0;
BEGIN
    FOR open_batch IN
        SELECT b.batch_id
        FROM batches b
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(c.accepted + c.queried + c.duplicates + c.dead_lettered_total), 0)
                AS outcomes
            FROM batch_counts c WHERE c.batch_id = b.batch_id) c
        WHERE b.completed_at IS NULL AND b.expected IS NOT NULL AND c.outcomes >= b.expected
    LOOP
        UPDATE batches SET completed_at = now()
        WHERE batch_id = open_batch.batch_id AND completed_at IS NULL;
        IF FOUND THEN
            SELECT * INTO r FROM batch_receipts WHERE batch_id = open_batch.batch_id;
            INSERT INTO outbox (events) VALUES (jsonb_build_array(outbox_event('batch.completed',
                NULL, NULL, NULL, jsonb_build_object('type', 'batch.completed',
                'batch_id', r.batch_id, 'expected', r.expected, 'accepted', r.accepted,
                'queried', r.queried, 'duplicates', r.duplicates,
                'dead_lettered', r.dead_lettered, 'completed_at', now()))));
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $$;
