-- Operator functions that decide from the row they locked, not from a read made before it.
--
-- queue.cancel and queue.requeue read a job's status without a lock, then locked the row
-- (FOR NO KEY UPDATE SKIP LOCKED) and wrote it without looking at the status again. A worker
-- that committed the job's completion in between (its claim holds the row until that very
-- commit) had cancel turn the completed job into `cancelled`, and requeue try to set it back
-- to `pending` (stopped only by the terminal_has_completed_at check, as an error). Both now
-- lock first: in READ COMMITTED a row changed since the statement's snapshot is locked and
-- returned in its latest committed version, and nobody can change it until this transaction
-- ends. A row that cannot be locked is judged by its latest committed status, as before:
-- active means a claim holds it (running, or being claimed) or another operator call does;
-- finished means a concurrent requeue does.
--
-- queue.requeue_failed counted the new jobs whose xmin was the transaction's xid; rows
-- written inside a savepoint or a plpgsql EXCEPTION block carry the subtransaction's xid, so
-- called there it reported 0. queue.requeue_job now says whether it created the job it
-- returns, requeue_failed counts that, and queue.requeue is a wrapper with its old signature.

-- Requeue one job; the rules of queue.requeue, and whether this call created the job.
--   running: refused (SQLSTATE 55006); the worker owns it until its attempt ends.
--   pending (e.g. waiting for a retry): made due now.
--   finished: a new pending row copying kind, subject and payload, linked both ways; if an
--   active job for the subject already exists, that one is returned instead. Concurrent
--   requeues of one finished job create one new job.
-- job_id: the job that will run; created: true only when this call inserted it.
CREATE FUNCTION queue.requeue_job(p_job_id bigint, OUT job_id bigint, OUT created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_job queue.jobs;
    v_new bigint;
BEGIN
    SELECT * INTO v_job FROM queue.jobs WHERE id = p_job_id FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        SELECT * INTO v_job FROM queue.jobs WHERE id = p_job_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job % does not exist', p_job_id USING ERRCODE = 'no_data_found';
        END IF;
        IF v_job.status IN ('pending', 'running') THEN
            IF queue.is_running(p_job_id) THEN
                RAISE EXCEPTION 'job % is running; requeue it after its attempt ends', p_job_id
                    USING ERRCODE = 'object_in_use';
            END IF;
            -- A lock without a running attempt is a worker claiming it right now or another
            -- operator call: either way it is about to be handled, which is what was asked.
            job_id := p_job_id;
            created := false;
            RETURN;
        END IF;
        -- Workers never lock finished rows, so this waits only for a concurrent requeue, and
        -- returns the row as that requeue committed it.
        SELECT * INTO v_job FROM queue.jobs WHERE id = p_job_id FOR NO KEY UPDATE;
    END IF;

    IF v_job.status IN ('pending', 'running') THEN
        -- Locked here, so no claim holds it. Workers never store `running`; one set by hand
        -- would otherwise never run.
        UPDATE queue.jobs SET status = 'pending', run_at = now(), updated_at = now()
        WHERE id = p_job_id;
        PERFORM pg_notify('queue_jobs', v_job.kind);
        job_id := p_job_id;
        created := false;
        RETURN;
    END IF;

    IF v_job.requeued_to IS NOT NULL THEN
        job_id := v_job.requeued_to;
        created := false;
        RETURN;
    END IF;

    INSERT INTO queue.jobs (kind, subject, payload, priority, max_attempts, requeued_from)
    VALUES (v_job.kind, v_job.subject, v_job.payload, v_job.priority, v_job.max_attempts,
            v_job.id)
    ON CONFLICT (kind, subject) WHERE status IN ('pending', 'running') DO NOTHING
    RETURNING id INTO v_new;
    IF v_new IS NULL THEN
        SELECT id INTO v_new FROM queue.jobs
        WHERE kind = v_job.kind AND subject = v_job.subject
          AND status IN ('pending', 'running');
        job_id := v_new;
        created := false;
        RETURN;
    END IF;
    UPDATE queue.jobs SET requeued_to = v_new, updated_at = now() WHERE id = p_job_id;
    job_id := v_new;
    created := true;
END;
$$;

-- Requeue one job (the rules are queue.requeue_job's). Returns the id of the job that will run.
CREATE OR REPLACE FUNCTION queue.requeue(p_job_id bigint) RETURNS bigint
LANGUAGE sql AS $$
    SELECT r.job_id FROM queue.requeue_job(p_job_id) AS r;
$$;

-- Requeue failed jobs in bulk: the latest failed job of each subject that has not been
-- requeued already and has no active successor. Every filter is optional.
-- Returns how many new jobs were enqueued.
CREATE OR REPLACE FUNCTION queue.requeue_failed(
    p_kind       text        DEFAULT NULL,
    p_error_code text        DEFAULT NULL,
    p_older_than interval    DEFAULT NULL,
    p_since      timestamptz DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_id      bigint;
    v_created boolean;
    v_count   integer := 0;
BEGIN
    FOR v_id IN
        SELECT DISTINCT ON (j.kind, coalesce(j.subject, j.id::text)) j.id
        FROM queue.jobs j
        WHERE j.status = 'failed'
          AND j.requeued_to IS NULL
          AND (p_kind IS NULL OR j.kind = p_kind)
          AND (p_error_code IS NULL OR j.error_code = p_error_code)
          AND (p_older_than IS NULL OR j.completed_at <= now() - p_older_than)
          AND (p_since IS NULL OR j.completed_at >= p_since)
          AND NOT EXISTS (
              SELECT 1 FROM queue.jobs later
              WHERE later.kind = j.kind AND later.subject = j.subject AND later.id > j.id)
        ORDER BY j.kind, coalesce(j.subject, j.id::text), j.id DESC
    LOOP
        -- counted only if this call made the new job (a concurrent call may have)
        SELECT r.created INTO v_created FROM queue.requeue_job(v_id) AS r;
        IF v_created THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END;
$$;

-- Cancel a job that has not started. Returns true when it was cancelled, false when it had
-- already finished; a running (or being claimed) job is refused with SQLSTATE 55006.
CREATE OR REPLACE FUNCTION queue.cancel(p_job_id bigint,
                                        p_reason text DEFAULT 'cancelled by operator')
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    SELECT status INTO v_status FROM queue.jobs WHERE id = p_job_id
    FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        SELECT status INTO v_status FROM queue.jobs WHERE id = p_job_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job % does not exist', p_job_id USING ERRCODE = 'no_data_found';
        END IF;
        -- held by a claim or an operator call; a finished row only by a concurrent requeue
        IF v_status IN ('pending', 'running') THEN
            RAISE EXCEPTION 'job % is running; it cannot be cancelled mid-attempt', p_job_id
                USING ERRCODE = 'object_in_use';
        END IF;
        RETURN false;
    END IF;
    IF v_status NOT IN ('pending', 'running') THEN
        RETURN false;
    END IF;
    UPDATE queue.jobs
    SET status = 'cancelled', error_code = 'cancelled', error_message = p_reason,
        completed_at = now(), updated_at = now()
    WHERE id = p_job_id;
    RETURN true;
END;
$$;
