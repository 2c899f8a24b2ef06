-- edc-ingest initial schema: records, their audit trail, data queries and rejections.
-- No column here ever holds a direct patient identifier: identifiers arrive as keyed pseudonyms.

CREATE TABLE crf_records (
    record_id        uuid        NOT NULL,
    version          integer     NOT NULL CHECK (version >= 1),
    message_id       text,
    study            text        NOT NULL,
    site             text        NOT NULL,
    subject          text        NOT NULL,
    visit            text        NOT NULL,
    form             text        NOT NULL,
    items            jsonb       NOT NULL,          -- de-identified: phi items are pseudonyms
    pseudonyms       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    birth_year       text        CHECK (birth_year ~ '^([0-9]{4}|90\+)$'),
    status           text        NOT NULL CHECK (status IN ('accepted', 'queried')),
    protocol_version text        NOT NULL,
    captured_at      timestamptz NOT NULL,
    entered_by       text        NOT NULL,
    batch_id         uuid,
    payload_sha256   text        NOT NULL,          -- SHA-256 of the message body as received
    received_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (record_id, version)
);
CREATE INDEX crf_records_subject ON crf_records (study, site, subject);
CREATE INDEX crf_records_batch ON crf_records (batch_id) WHERE batch_id IS NOT NULL;

-- The newest version of each record, whatever order the versions arrived in.
CREATE VIEW crf_current AS
    SELECT DISTINCT ON (record_id) *
    FROM crf_records
    ORDER BY record_id, version DESC;

CREATE TABLE audit_trail (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record_id      uuid        NOT NULL,
    version        integer     NOT NULL,
    action         text        NOT NULL,
    actor          text        NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    message_id     text,
    payload_sha256 text        NOT NULL,
    detail         text
);
CREATE INDEX audit_trail_record ON audit_trail (record_id, version);

-- The audit trail is append-only: the database itself refuses to change or remove a row.
CREATE FUNCTION audit_trail_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_trail is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_trail_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_trail
    FOR EACH ROW EXECUTE FUNCTION audit_trail_refuse_change();
CREATE TRIGGER audit_trail_no_truncate
    BEFORE TRUNCATE ON audit_trail
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_refuse_change();

CREATE TABLE data_queries (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record_id  uuid        NOT NULL,
    version    integer     NOT NULL,
    check_id   text        NOT NULL,               -- an edit check id, or the item name
    message    text        NOT NULL,
    status     text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'closed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (record_id, version) REFERENCES crf_records (record_id, version)
);
CREATE INDEX data_queries_record ON data_queries (record_id, version);

-- One row per dead-lettered message. No patient data: the reason is written by edc-ingest.
CREATE TABLE rejections (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  text,
    record_id   uuid,
    batch_id    uuid,
    kind        text        NOT NULL
        CHECK (kind IN ('malformed', 'too_large', 'invalid', 'conflict', 'panic', 'failed', 'poison')),
    reason      text        NOT NULL,
    attempts    integer     NOT NULL DEFAULT 1,
    body_sha256 text        NOT NULL,
    consumer    text,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
-- A redelivered message is the same rejection: at most one row per (body, message_id).
CREATE UNIQUE INDEX rejections_once ON rejections (body_sha256, (coalesce(message_id, '')));
CREATE INDEX rejections_kind ON rejections (kind);
CREATE INDEX rejections_batch ON rejections (batch_id) WHERE batch_id IS NOT NULL;
