-- The fleet's chores grow one: embeddings that ended `failed` are retried on a schedule, as
-- the design retries them on its next tick, at most p_retry_cap rows per run.
--
-- queue.periodic_hooks names, per chore, a function(integer) returning how many rows it
-- handled; queue.maintenance (migration 0024, now returning (item, n)) runs each after the
-- prune, in the same turn of the same elected worker.

CREATE TABLE queue.periodic_hooks (
    item text    PRIMARY KEY,
    hook regproc NOT NULL
);

COMMENT ON TABLE queue.periodic_hooks IS
    'Chores queue.maintenance runs once per interval: item -> function(cap integer) returns integer.';

-- Up to p_limit questions and chunks whose embedding failed set pending again, with their
-- jobs enqueued (the deleted ones stay as they are). Returns how many.
CREATE FUNCTION app.retry_failed_embeddings(p_limit integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_limit integer := least(greatest(p_limit, 0), 10000);
    v_done  integer;
BEGIN
    WITH q AS (
        UPDATE app.questions x SET embedding_status = 'pending'
        WHERE x.id IN (SELECT y.id FROM app.questions y
                       WHERE y.embedding_status = 'failed' AND y.deleted_at IS NULL
                       ORDER BY y.id LIMIT v_limit)
        RETURNING x.id
    ), c AS (
        UPDATE app.document_chunks x SET embedding_status = 'pending'
        WHERE x.id IN (SELECT y.id FROM app.document_chunks y
                       JOIN app.documents d ON d.id = y.document_id
                       WHERE y.embedding_status = 'failed' AND d.deleted_at IS NULL
                       ORDER BY y.id LIMIT v_limit - (SELECT count(*) FROM q))
        RETURNING x.id
    ), jobs AS (
        SELECT queue.enqueue('embedding', 'question:' || q.id,
                             jsonb_build_object('source', 'question', 'id', q.id)) AS id
        FROM q
        UNION ALL
        SELECT queue.enqueue('embedding', 'chunk:' || c.id,
                             jsonb_build_object('source', 'chunk', 'id', c.id))
        FROM c
    )
    SELECT count(*) INTO v_done FROM jobs;
    RETURN v_done;
END;
$$;

INSERT INTO queue.periodic_hooks (item, hook) VALUES
    ('embeddings_retried', 'app.retry_failed_embeddings');

DROP FUNCTION queue.maintenance(interval, interval, interval, interval, integer);
CREATE FUNCTION queue.maintenance(
    p_every     interval,
    p_completed interval,
    p_failed    interval,
    p_calls     interval,
    p_batch     integer DEFAULT 5000,
    p_retry_cap integer DEFAULT 100
) RETURNS TABLE (item text, n bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_hook record;
    v_n    integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('queue.maintenance')) THEN
        RETURN;  -- another worker is at it
    END IF;
    IF EXISTS (SELECT 1 FROM queue.maintenance_runs
               WHERE chore = 'prune'
                 AND last_run_at > now() - greatest(p_every, interval '1 minute')) THEN
        RETURN;
    END IF;
    INSERT INTO queue.maintenance_runs (chore, last_run_at) VALUES ('prune', now())
    ON CONFLICT (chore) DO UPDATE SET last_run_at = EXCLUDED.last_run_at;
    RETURN QUERY SELECT p.item, p.deleted
                 FROM queue.prune(p_completed, p_failed, p_calls, p_batch) p;
    FOR v_hook IN SELECT h.item, h.hook FROM queue.periodic_hooks h ORDER BY h.item LOOP
        -- regproc prints as a quoted, schema-qualified name: nothing of a row is spliced
        EXECUTE format('SELECT %s($1)', v_hook.hook) INTO v_n USING p_retry_cap;
        item := v_hook.item; n := v_n; RETURN NEXT;
    END LOOP;
END;
$$;

REVOKE ALL ON queue.periodic_hooks FROM PUBLIC;
GRANT SELECT ON queue.periodic_hooks TO llm_worker, llm_operator;
REVOKE ALL ON FUNCTION app.retry_failed_embeddings(integer),
    queue.maintenance(interval, interval, interval, interval, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION queue.maintenance(interval, interval, interval, interval, integer,
                                            integer) TO llm_worker;
