-- Downstream events (transactional outbox), alerts, batch receipts and dead-letter actions.
-- Everything a record causes is written by ingest_records() in the same transaction as the record.

-- Events and result callbacks waiting to be published. The relay publishes them in id order with
-- publisher confirms, then deletes them; a crash in between publishes them again (same event_id).
CREATE TABLE outbox (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL DEFAULT gen_random_uuid(),  -- random: no index needed
    routing_key    text        NOT NULL,    -- on the events exchange (record.accepted, ...)
    reply_to       text,                    -- set for a result callback: sent to this queue instead
    correlation_id text,
    body           jsonb       NOT NULL,    -- never an identifier nor a phi value
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE alerts (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  text        NOT NULL,
    record_id uuid        NOT NULL,
    version   integer     NOT NULL,
    study     text        NOT NULL,
    site      text        NOT NULL,
    subject   text        NOT NULL,
    visit     text        NOT NULL,
    form      text        NOT NULL,
    raised_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (record_id, version, alert_id),
    FOREIGN KEY (record_id, version) REFERENCES crf_records (record_id, version)
);

-- Upload batches and their receipts. The counts are updated in the transactions that store or
-- reject the batch's records. All the records of a batch arrive together, so one counter row per batch
-- would serialise every worker on its row lock: each database connection counts into its own row of
-- batch_counts instead (shard = the backend pid), and batch_receipts adds them up.
CREATE TABLE batches (
    batch_id     uuid        PRIMARY KEY,
    expected     integer,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX batches_open ON batches (batch_id) WHERE completed_at IS NULL;

CREATE TABLE batch_counts (
    batch_id            uuid        NOT NULL REFERENCES batches (batch_id),
    shard               integer     NOT NULL,
    accepted            integer     NOT NULL DEFAULT 0,
    queried             integer     NOT NULL DEFAULT 0,
    duplicates          integer     NOT NULL DEFAULT 0,
    dead_lettered       jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- {kind: count}
    dead_lettered_total integer     NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, shard)
);

-- The receipt of each batch: what `edc-ingest batch status` prints.
CREATE VIEW batch_receipts AS
SELECT b.batch_id, b.expected,
       coalesce(sum(c.accepted), 0)::integer            AS accepted,
       coalesce(sum(c.queried), 0)::integer             AS queried,
       coalesce(sum(c.duplicates), 0)::integer          AS duplicates,
       coalesce((SELECT jsonb_object_agg(k, n) FROM (
                    SELECT e.key AS k, sum(e.value::integer) AS n
                    FROM batch_counts c2, jsonb_each_text(c2.dead_lettered) e
                    WHERE c2.batch_id = b.batch_id GROUP BY e.key) d), '{}'::jsonb) AS dead_lettered,
       coalesce(sum(c.dead_lettered_total), 0)::integer AS dead_lettered_total,
       b.first_seen, max(c.updated_at) AS updated_at, b.completed_at
FROM batches b LEFT JOIN batch_counts c ON c.batch_id = b.batch_id
GROUP BY b.batch_id;

-- Who replayed or purged which dead letter, when, and with what result.
CREATE TABLE dlq_actions (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action      text        NOT NULL CHECK (action IN ('replay', 'purge')),
    actor       text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    message_id  text,
    record_id   uuid,
    batch_id    uuid,
    kind        text,
    body_sha256 text        NOT NULL,
    result      text        NOT NULL
);

-- Adds outcomes to a batch's receipt, in this connection's own counter row (no lock shared with
-- other workers). Completion is detected by complete_batches().
CREATE FUNCTION batch_add(p_batch uuid, p_expected integer, p_accepted integer, p_queried integer,
                          p_duplicates integer, p_kind text, p_dead integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO batches (batch_id, expected) VALUES (p_batch, p_expected) ON CONFLICT DO NOTHING;
    INSERT INTO batch_counts AS t (batch_id, shard, accepted, queried, duplicates, dead_lettered,
                                   dead_lettered_total)
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
END $$;

-- Marks every batch whose outcomes are all in as complete and emits its batch.completed event,
-- exactly once (the row lock on the batch and completed_at guard it). Run by the outbox relay before
-- each round, so the event follows the events of the batch's records.
CREATE FUNCTION complete_batches() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r batch_receipts;
    n integer := 0;
BEGIN
    FOR r IN
        SELECT * FROM batch_receipts
        WHERE completed_at IS NULL AND expected IS NOT NULL
          AND accepted + queried + duplicates + dead_lettered_total >= expected
    LOOP
        UPDATE batches SET completed_at = now()
        WHERE batch_id = r.batch_id AND completed_at IS NULL;
        IF FOUND THEN
            INSERT INTO outbox (routing_key, body) VALUES ('batch.completed', jsonb_build_object(
                'type', 'batch.completed', 'batch_id', r.batch_id, 'expected', r.expected,
                'accepted', r.accepted, 'queried', r.queried, 'duplicates', r.duplicates,
                'dead_lettered', r.dead_lettered, 'completed_at', now()));
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END $$;

-- Stores records, one transaction for all of them: the records, their audit rows, data queries,
-- alerts, events, result callbacks and batch receipts. Idempotent on (record_id, version).
-- Returns, per input row, whether it was inserted, else the stored payload hash and message id.
CREATE FUNCTION ingest_records(
    p_ord int[], p_record_id uuid[], p_version int[], p_message_id text[], p_study text[],
    p_site text[], p_subject text[], p_visit text[], p_form text[], p_items jsonb[],
    p_pseudonyms jsonb[], p_birth_year text[], p_status text[], p_protocol_version text[],
    p_captured_at timestamptz[], p_entered_by text[], p_batch_id uuid[], p_batch_size int[],
    p_payload_sha256 text[], p_reply_to text[], p_correlation_id text[],
    q_record_id uuid[], q_version int[], q_check_id text[], q_message text[],
    a_record_id uuid[], a_version int[], a_alert_id text[])
RETURNS TABLE (ord int, inserted boolean, existing_sha256 text, existing_message_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ins_ids uuid[];
    ins_versions int[];
BEGIN
    WITH input AS (
        SELECT * FROM unnest(p_ord, p_record_id, p_version, p_message_id, p_study, p_site,
            p_subject, p_visit, p_form, p_items, p_pseudonyms, p_birth_year, p_status,
            p_protocol_version, p_captured_at, p_entered_by, p_batch_id, p_payload_sha256,
            p_reply_to, p_correlation_id)
        AS t(ord, record_id, version, message_id, study, site, subject, visit, form, items,
             pseudonyms, birth_year, status, protocol_version, captured_at, entered_by, batch_id,
             payload_sha256, reply_to, correlation_id)
    ), ins AS (
        INSERT INTO crf_records (record_id, version, message_id, study, site, subject, visit, form,
            items, pseudonyms, birth_year, status, protocol_version, captured_at, entered_by,
            batch_id, payload_sha256)
        SELECT t.record_id, t.version, t.message_id, t.study, t.site, t.subject, t.visit, t.form,
            t.items, t.pseudonyms, t.birth_year, t.status, t.protocol_version, t.captured_at,
            t.entered_by, t.batch_id, t.payload_sha256
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
        -- In order: per record, its record event, then its alerts, then its callback.
        INSERT INTO outbox (routing_key, reply_to, correlation_id, body)
        SELECT e.routing_key, e.reply_to, e.correlation_id, e.body FROM (
            SELECT s.ord, 0 AS seq, 'record.' || s.status AS routing_key, NULL::text AS reply_to,
                NULL::text AS correlation_id,
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
            SELECT s.ord, 1, 'alert.raised', NULL, NULL,
                jsonb_build_object('type', 'alert.raised', 'alert', r.alert_id, 'study', s.study,
                    'site', s.site, 'subject', s.subject, 'form', s.form, 'visit', s.visit,
                    'record_id', s.record_id, 'version', s.version, 'status', s.status,
                    'captured_at', s.captured_at, 'raised_at', s.received_at)
            FROM raised r JOIN stored s ON s.record_id = r.record_id AND s.version = r.version
            UNION ALL
            SELECT s.ord, 2, s.reply_to, s.reply_to, s.correlation_id,
                jsonb_build_object('type', 'outcome', 'outcome', s.status, 'record_id', s.record_id,
                    'version', s.version, 'message_id', s.message_id)
            FROM stored s WHERE s.reply_to IS NOT NULL
        ) e ORDER BY e.ord, e.seq
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

    RETURN QUERY
    SELECT i.ord, k.record_id IS NOT NULL, c.payload_sha256, c.message_id
    FROM unnest(p_ord, p_record_id, p_version) AS i(ord, record_id, version)
    LEFT JOIN unnest(ins_ids, ins_versions) AS k(record_id, version)
           ON k.record_id = i.record_id AND k.version = i.version
    LEFT JOIN crf_records c ON c.record_id = i.record_id AND c.version = i.version
    ORDER BY i.ord;
END $$;

-- Re-uploads already counted, by message id: a redelivered re-upload is not counted twice.
CREATE TABLE duplicates_seen (
    message_id text        PRIMARY KEY,
    record_id  uuid        NOT NULL,
    version    integer     NOT NULL,
    batch_id   uuid,
    seen_at    timestamptz NOT NULL DEFAULT now()
);

-- A message recognised as a duplicate under its own message id (a re-upload, not a redelivery of
-- the stored message): counted once on its batch's receipt, and its reply_to answered.
CREATE FUNCTION note_duplicate(p_batch uuid, p_expected integer, p_record_id uuid,
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
        INSERT INTO outbox (routing_key, reply_to, correlation_id, body)
        VALUES (p_reply_to, p_reply_to, p_correlation_id, jsonb_build_object('type', 'outcome',
            'outcome', 'duplicate', 'record_id', p_record_id, 'version', p_version,
            'message_id', p_message_id));
    END IF;
END $$;

-- A dead-lettered message: its rejections row (once per message), its batch receipt and its
-- reply_to answer, in one transaction. The dead letter itself is published by the daemon after.
CREATE FUNCTION record_rejection(p_message_id text, p_record_id uuid, p_batch_id uuid,
                                 p_batch_size integer, p_kind text, p_reason text,
                                 p_attempts integer, p_body_sha256 text, p_consumer text,
                                 p_reply_to text, p_correlation_id text)
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
        INSERT INTO outbox (routing_key, reply_to, correlation_id, body)
        VALUES (p_reply_to, p_reply_to, p_correlation_id, jsonb_build_object('type', 'outcome',
            'outcome', 'dead_lettered', 'kind', p_kind, 'reason', p_reason,
            'record_id', p_record_id, 'message_id', p_message_id));
    END IF;
END $$;
