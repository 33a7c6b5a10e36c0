-- An enqueue that meets its (kind, subject) while a claim is working on it leaves a rerun
-- request, so the job runs again after it ends.
--
-- Before, such an enqueue was a no-op: the running job went on with the input it had read
-- (a quiz's answers before a regrade), finished, and nothing reflected the change. Now:
--   * the active job is pending and nobody holds it: queue.enqueue takes a FOR SHARE lock on
--     it, so no claim can start on it before the enqueuing transaction commits, and the job
--     then reads the new input. Claims skip it meanwhile and the NOTIFY at that commit wakes
--     them (FOR SHARE does not conflict with another enqueue doing the same);
--   * a claim holds it (FOR NO KEY UPDATE): a row in queue.reruns, written without waiting
--     on the claim's lock. finish_jobs takes the requests it can see: a job that ends
--     (completed, failed, skipped) gets a successor with the request's payload; one that
--     runs again anyway (a retry, a superseded attempt) reads the input again, and its
--     requests are simply dropped;
--   * a request committed after that finish read the table (the enqueuing transaction was
--     still open) is found by queue.apply_reruns(), which every worker runs with its
--     heartbeat.
-- queue.enqueue now runs with its owner's rights, since taking FOR SHARE needs UPDATE rights
-- on queue.jobs that an application role should not hold.

CREATE TABLE queue.reruns (
    job_id       bigint PRIMARY KEY,
    kind         text        NOT NULL,
    subject      text,
    payload      jsonb       NOT NULL,
    priority     smallint    NOT NULL,
    max_attempts integer     NOT NULL,
    requests     integer     NOT NULL DEFAULT 1,
    requested_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE queue.reruns IS
    'Requests to run a job again after it ends: an enqueue met it while a claim held it.';

CREATE OR REPLACE FUNCTION queue.enqueue(
    p_kind         text,
    p_subject      text,
    p_payload      jsonb       DEFAULT '{}'::jsonb,
    p_priority     smallint    DEFAULT 0,
    p_run_at       timestamptz DEFAULT now(),
    p_max_attempts integer     DEFAULT 2
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO queue.jobs (kind, subject, payload, priority, run_at, max_attempts)
    VALUES (p_kind, p_subject, coalesce(p_payload, '{}'::jsonb), p_priority, p_run_at,
            p_max_attempts)
    ON CONFLICT (kind, subject) WHERE status IN ('pending', 'running') DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NOT NULL THEN
        RETURN v_id;
    END IF;
    SELECT id INTO v_id FROM queue.jobs
    WHERE kind = p_kind AND subject = p_subject AND status IN ('pending', 'running');
    IF v_id IS NULL THEN
        RETURN NULL;  -- it ended between the insert and this read; the caller may retry
    END IF;
    PERFORM 1 FROM queue.jobs WHERE id = v_id FOR SHARE SKIP LOCKED;
    IF FOUND THEN
        -- not claimed, and no claim can start on it before this transaction commits
        PERFORM pg_notify('queue_jobs', p_kind);
    ELSE
        INSERT INTO queue.reruns AS r (job_id, kind, subject, payload, priority, max_attempts)
        VALUES (v_id, p_kind, p_subject, coalesce(p_payload, '{}'::jsonb), p_priority,
                p_max_attempts)
        ON CONFLICT (job_id) DO UPDATE
        SET payload = EXCLUDED.payload, requests = r.requests + 1, requested_at = now(),
            priority = greatest(r.priority, EXCLUDED.priority);
    END IF;
    RETURN v_id;
END;
$$;

-- Turn rerun requests into jobs. With p_job_ids (a claim's jobs, right after finish_jobs in
-- the claiming transaction): every request of those jobs is taken; a job that ended gets a
-- successor, one that runs again anyway needs none. Without (the heartbeat's sweep): the
-- requests whose job is no longer active. A successor copies the request (kind, subject,
-- payload); if the subject has an active job already, that one reads the input anyway.
-- Requests of cancelled or deleted jobs are dropped. Returns the jobs enqueued.
-- It runs with its owner's rights: the worker's role does not insert jobs of its own.
CREATE FUNCTION queue.apply_reruns(p_job_ids bigint[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_count integer;
BEGIN
    WITH taken AS (
        DELETE FROM queue.reruns r
        WHERE CASE WHEN p_job_ids IS NOT NULL THEN r.job_id = ANY(p_job_ids)
                   ELSE NOT EXISTS (SELECT 1 FROM queue.jobs j WHERE j.id = r.job_id
                                      AND j.status IN ('pending', 'running')) END
        RETURNING r.*
    ), again AS (
        INSERT INTO queue.jobs (kind, subject, payload, priority, max_attempts, requeued_from)
        SELECT t.kind, t.subject, t.payload, t.priority, t.max_attempts, t.job_id
        FROM taken t
        JOIN queue.jobs j ON j.id = t.job_id AND j.status IN ('completed', 'failed', 'skipped')
        ON CONFLICT (kind, subject) WHERE status IN ('pending', 'running') DO NOTHING
        RETURNING id
    )
    SELECT count(*) INTO v_count FROM again;
    RETURN v_count;
END;
$$;

-- only queue.enqueue and queue.apply_reruns (both with their owner's rights) write it
REVOKE ALL ON queue.reruns FROM PUBLIC;
GRANT SELECT ON queue.reruns TO llm_worker;
