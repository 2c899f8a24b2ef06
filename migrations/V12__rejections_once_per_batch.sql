-- Upload batches of ODM messages, which name their batch in headers (edc-batch-id,
-- edc-batch-size), not in their body:
--
-- 1. A rejection is counted once per message in each batch. Importing the same file again is a
--    new batch with the same documents and message ids: its refusals count on the new batch's
--    receipt, while a redelivery within one batch stays one rejection. For an edc.crf.v1 record
--    the batch is in the body already, so nothing changes for it.
-- 2. A removal (a version with status `removed`) counts on its batch's receipt as accepted:
--    ingest_records counts accepted and queried versions only.
CREATE UNIQUE INDEX rejections_once_per_batch
    ON rejections (body_sha256, (coalesce(message_id, '')),
                   (coalesce(batch_id, '00000000-0000-0000-0000-000000000000'::uuid)));
DROP INDEX rejections_once;

-- With `@s.` replaced by this schema and `@path` by the pinned search_path (see V10).
DO $migration$
DECLARE
    s text := quote_ident(current_schema()) || '.';
    path text := format('pg_catalog, %I, pg_temp', current_schema());
BEGIN
    EXECUTE replace(replace($ddl$
CREATE FUNCTION @s.batch_add_removed(p_batch uuid, p_expected integer)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = @path AS $fn$
    SELECT @s.batch_add(p_batch, p_expected, 1, 0, 0, NULL, 0)
$fn$
$ddl$, '@s.', s), '@path', path);
END $migration$;

REVOKE EXECUTE ON FUNCTION batch_add_removed(uuid, integer) FROM PUBLIC;
