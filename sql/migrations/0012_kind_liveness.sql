-- The unknown-kind sweep measures its grace from when a kind was last served, not from when a
-- job was created, and it resets the domain row of the jobs it fails.
--
-- Before, a pending job older than the grace whose kind had no live worker was failed. A
-- cleanly stopped worker deletes its queue.workers row, so when the only worker of kind B
-- restarted, a worker of kind A sweeping in the gap failed B's backlog; after any outage
-- longer than the grace, the first worker back failed every other kind's backlog. And a
-- swept job's domain row (a question's explanation status) stayed `pending` for good.
-- Now:
--   * queue.kinds_seen keeps, per kind, the last time a live worker served it; heartbeats,
--     start and clean stop write it, and it outlives the workers' rows;
--   * a job is failed only once its kind has gone unserved for the grace *and* the job has
--     waited that long, and only by a sweep of a fleet that has itself been up for the grace
--     (some live worker started at least that long ago): a fleet coming back from an outage
--     gives every kind's workers the grace to come back too;
--   * queue.failure_hooks names, per kind, a function that resets the domain rows of jobs
--     failed without a worker (the job kinds' own final-failure hooks run in the worker).

CREATE TABLE queue.kinds_seen (
    kind         text PRIMARY KEY,
    last_seen_at timestamptz NOT NULL
);

COMMENT ON TABLE queue.kinds_seen IS
    'The last time a live worker served each job kind; kept when the worker stops.';

-- What is already registered counts as seen now: a worker that upgrades keeps its kinds.
INSERT INTO queue.kinds_seen (kind, last_seen_at)
SELECT DISTINCT k, max(w.heartbeat_at) OVER (PARTITION BY k)
FROM queue.workers w, unnest(w.kinds) AS k
ON CONFLICT (kind) DO NOTHING;

CREATE TABLE queue.failure_hooks (
    kind text PRIMARY KEY,
    hook regproc NOT NULL
);

COMMENT ON TABLE queue.failure_hooks IS
    'Per job kind, a function(bigint[]) run on the ids of jobs the unknown-kind sweep failed.';

-- A worker starts, beats, or comes back after its row was removed: one statement for all.
CREATE FUNCTION queue.worker_alive(p_worker_id text, p_kinds text[], p_started boolean)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO queue.workers AS w (worker_id, kinds)
    VALUES (p_worker_id, p_kinds)
    ON CONFLICT (worker_id) DO UPDATE
    SET kinds = EXCLUDED.kinds, heartbeat_at = now(),
        started_at = CASE WHEN p_started THEN now() ELSE w.started_at END;
    INSERT INTO queue.kinds_seen (kind, last_seen_at)
    SELECT DISTINCT k, now() FROM unnest(p_kinds) AS k
    ON CONFLICT (kind) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at;
$$;

-- A clean stop: the worker's row goes, its kinds were served until now.
CREATE FUNCTION queue.worker_stopped(p_worker_id text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO queue.kinds_seen (kind, last_seen_at)
    SELECT DISTINCT k, now() FROM queue.workers w, unnest(w.kinds) AS k
    WHERE w.worker_id = p_worker_id
    ON CONFLICT (kind) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at;
    DELETE FROM queue.workers WHERE worker_id = p_worker_id;
$$;

-- Fail pending jobs that no live worker runs (see the header). Never touches a job some
-- transaction holds. Returns how many jobs were failed.
CREATE OR REPLACE FUNCTION queue.fail_unknown_kinds(
    p_grace interval DEFAULT interval '10 minutes',
    p_live  interval DEFAULT interval '2 minutes'
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_ids   bigint[];
    v_kinds text[];
    v_hook  record;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM queue.workers
                   WHERE heartbeat_at > now() - p_live AND started_at <= now() - p_grace) THEN
        RETURN 0;  -- no worker alive, or the fleet is just back: every kind gets the grace
    END IF;
    WITH orphans AS (
        SELECT j.id FROM queue.jobs j
        LEFT JOIN queue.kinds_seen s ON s.kind = j.kind
        WHERE j.status = 'pending'
          AND greatest(j.created_at, s.last_seen_at) < now() - p_grace
          AND NOT EXISTS (
              SELECT 1 FROM queue.workers w
              WHERE w.heartbeat_at > now() - p_live AND j.kind = ANY (w.kinds))
        FOR NO KEY UPDATE OF j SKIP LOCKED
    ), failed AS (
        UPDATE queue.jobs j
        SET status = 'failed', error_code = 'unknown_kind',
            error_message = format('no live worker runs job kind %L; check the kind, or '
                                   'start a worker that runs it and requeue', j.kind),
            completed_at = now(), updated_at = now()
        FROM orphans o
        WHERE j.id = o.id
        RETURNING j.id, j.kind
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}'), coalesce(array_agg(kind ORDER BY id), '{}')
    INTO v_ids, v_kinds FROM failed;
    FOR v_hook IN
        SELECT h.hook, array_agg(s.id ORDER BY s.id) AS ids
        FROM unnest(v_ids, v_kinds) AS s(id, kind)
        JOIN queue.failure_hooks h ON h.kind = s.kind
        GROUP BY h.hook
    LOOP
        -- regproc prints as a quoted, schema-qualified name: no text of a job is spliced
        EXECUTE format('SELECT %s($1)', v_hook.hook) USING v_hook.ids;
    END LOOP;
    RETURN cardinality(v_ids);
END;
$$;

GRANT SELECT, INSERT, UPDATE ON queue.kinds_seen TO llm_worker;
GRANT SELECT ON queue.failure_hooks TO llm_worker;
