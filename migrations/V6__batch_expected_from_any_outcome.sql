-- A batch's expected size was written only by the first outcome of the batch. An outcome that did
-- not know the size (a message refused before its batch could be read) left it empty for good, and
-- the batch never completed. Now the first outcome that knows the size sets it.
--
-- Only that outcome takes the batch row's lock: every other one finds the size set and touches
-- nothing, so outcomes of one batch committing side by side still never wait for each other.
CREATE OR REPLACE FUNCTION batch_add(p_batch uuid, p_expected integer, p_accepted integer,
                                     p_queried integer, p_duplicates integer, p_kind text,
                                     p_dead integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO batches (batch_id, expected) VALUES (p_batch, p_expected) ON CONFLICT DO NOTHING;
    IF p_expected IS NOT NULL THEN
        UPDATE batches SET expected = p_expected WHERE batch_id = p_batch AND expected IS NULL;
    END IF;
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
