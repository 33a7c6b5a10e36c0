-- Which worker runs which kinds, so a job of a kind that no live worker runs can be failed
-- with a clear error instead of waiting forever.

CREATE TABLE queue.workers (
    worker_id    text PRIMARY KEY,
    kinds        text[]      NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE queue.workers IS
    'Live workers and their job kinds; a row is refreshed every heartbeat and removed on stop.';

-- Fail pending jobs that no live worker runs, once they have waited p_grace. Does nothing
-- while no worker is alive at all (a stopped fleet is not a reason to fail work), and never
-- touches a job some transaction holds. Returns how many jobs were failed.
CREATE FUNCTION queue.fail_unknown_kinds(
    p_grace interval DEFAULT interval '10 minutes',
    p_live  interval DEFAULT interval '2 minutes'
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM queue.workers WHERE heartbeat_at > now() - p_live) THEN
        RETURN 0;
    END IF;
    WITH orphans AS (
        SELECT j.id FROM queue.jobs j
        WHERE j.status = 'pending' AND j.created_at < now() - p_grace
          AND NOT EXISTS (
              SELECT 1 FROM queue.workers w
              WHERE w.heartbeat_at > now() - p_live AND j.kind = ANY (w.kinds))
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE queue.jobs j
    SET status = 'failed', error_code = 'unknown_kind',
        error_message = format('no live worker runs job kind %L; check the kind, or start a '
                               'worker that runs it and requeue', j.kind),
        completed_at = now(), updated_at = now()
    FROM orphans o
    WHERE j.id = o.id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON queue.workers TO llm_worker;
