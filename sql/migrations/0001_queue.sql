-- The job queue: one table of jobs, one of attempts, and the operator functions.
--
-- A job being worked is a `pending` row locked FOR NO KEY UPDATE by the worker's claiming
-- transaction; the terminal status is written by that same transaction, together with the
-- job's domain result. `running` is therefore never stored: it is derived (queue.job_states)
-- from an open attempt whose claiming transaction is still in progress. If the worker dies,
-- its transaction rolls back, the lock goes with it and the job is claimable at once.

CREATE SCHEMA IF NOT EXISTS queue;

CREATE TABLE queue.jobs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind          text        NOT NULL CHECK (kind <> ''),
    subject       text,
    payload       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status        text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'completed', 'failed', 'skipped', 'cancelled')),
    priority      smallint    NOT NULL DEFAULT 0,
    attempts      integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts  integer     NOT NULL DEFAULT 2 CHECK (max_attempts >= 1),
    run_at        timestamptz NOT NULL DEFAULT now(),
    error_code    text,
    error_message text,
    result        jsonb,
    worker_id     text,
    requeued_from bigint,
    requeued_to   bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    completed_at  timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT terminal_has_completed_at CHECK (
        (status IN ('pending', 'running')) = (completed_at IS NULL)
    ),
    -- handlers read named fields; anything else is refused at the door
    CONSTRAINT payload_is_object CHECK (jsonb_typeof(payload) = 'object')
);

COMMENT ON TABLE queue.jobs IS
    'Job rows. A pending row locked by a worker transaction is running; see queue.job_states.';

-- One active job per (kind, subject); finished rows stay as history.
CREATE UNIQUE INDEX jobs_one_active ON queue.jobs (kind, subject)
    WHERE status IN ('pending', 'running');

-- The claim scan: pending jobs of a kind in priority, then due-time order.
CREATE INDEX jobs_claim ON queue.jobs (kind, priority DESC, run_at, id)
    WHERE status = 'pending';

CREATE INDEX jobs_subject ON queue.jobs (kind, subject, id DESC);
CREATE INDEX jobs_failed ON queue.jobs (kind, error_code) WHERE status = 'failed';

-- One row per attempt, written on a connection of its own and committed before the handler
-- runs, so an attempt counts even when the claiming transaction dies with its worker.
-- The foreign key check takes FOR KEY SHARE on the job row, which the claim's
-- FOR NO KEY UPDATE lock does not block.
CREATE TABLE queue.attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id        bigint      NOT NULL REFERENCES queue.jobs (id) ON DELETE CASCADE,
    attempt       integer     NOT NULL,
    worker_id     text        NOT NULL,
    claim_xid     xid8        NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    -- completed | failed | skipped | retry | superseded | released | worker_lost
    outcome       text,
    error_code    text,
    error_message text
);

CREATE INDEX attempts_job ON queue.attempts (job_id);
-- one attempt per job and claim, so a retried bookkeeping insert cannot count one twice
CREATE UNIQUE INDEX attempts_claim ON queue.attempts (job_id, claim_xid);
CREATE INDEX attempts_open ON queue.attempts (job_id) WHERE finished_at IS NULL;

-- Wake listening workers. The payload is the kind, never the job id, so a transaction that
-- enqueues many jobs of one kind sends one notification.
CREATE FUNCTION queue.notify_new_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('queue_jobs', k.kind)
    FROM (SELECT DISTINCT n.kind FROM new_jobs n WHERE n.status = 'pending') AS k;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify AFTER INSERT ON queue.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION queue.notify_new_jobs();

-- Enqueue a job unless one is already active for (kind, subject). Returns the id of the new
-- job, or of the active one that made this call a no-op. ON CONFLICT DO NOTHING never waits
-- on the lock a running worker holds on the active row.
CREATE FUNCTION queue.enqueue(
    p_kind         text,
    p_subject      text,
    p_payload      jsonb       DEFAULT '{}'::jsonb,
    p_priority     smallint    DEFAULT 0,
    p_run_at       timestamptz DEFAULT now(),
    p_max_attempts integer     DEFAULT 2
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO queue.jobs (kind, subject, payload, priority, run_at, max_attempts)
    VALUES (p_kind, p_subject, coalesce(p_payload, '{}'::jsonb), p_priority, p_run_at,
            p_max_attempts)
    ON CONFLICT (kind, subject) WHERE status IN ('pending', 'running') DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT id INTO v_id FROM queue.jobs
        WHERE kind = p_kind AND subject = p_subject AND status IN ('pending', 'running');
    END IF;
    RETURN v_id;
END;
$$;

-- Jobs with their live state: `running` while an attempt's claiming transaction is in
-- progress, otherwise the stored status.
CREATE VIEW queue.job_states AS
SELECT j.*,
       CASE
           WHEN j.status = 'pending' AND EXISTS (
               SELECT 1 FROM queue.attempts a
               WHERE a.job_id = j.id AND a.finished_at IS NULL
                 AND pg_xact_status(a.claim_xid) = 'in progress')
           THEN 'running'
           ELSE j.status
       END AS state
FROM queue.jobs j;

-- Counts by kind and live state, with the age of the oldest due pending job.
CREATE VIEW queue.stats AS
SELECT kind,
       state,
       count(*)::bigint AS jobs,
       max(now() - run_at) FILTER (WHERE state = 'pending' AND run_at <= now())
           AS oldest_pending_age
FROM queue.job_states
GROUP BY kind, state;

-- True while an attempt of the job is held by a live claiming transaction.
CREATE FUNCTION queue.is_running(p_job_id bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM queue.attempts a
        WHERE a.job_id = p_job_id AND a.finished_at IS NULL
          AND pg_xact_status(a.claim_xid) = 'in progress');
$$;

-- Requeue one job.
--   running: refused (SQLSTATE 55006); the worker owns it until its attempt ends.
--   pending (e.g. waiting for a retry): made due now.
--   finished: a new pending row copying kind, subject and payload, linked both ways; if an
--   active job for the subject already exists, that one is returned instead. Concurrent
--   requeues of one finished job create one new job.
-- Returns the id of the job that will run.
CREATE FUNCTION queue.requeue(p_job_id bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_job queue.jobs;
    v_new bigint;
BEGIN
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
        PERFORM 1 FROM queue.jobs WHERE id = p_job_id FOR NO KEY UPDATE SKIP LOCKED;
        IF FOUND THEN
            -- workers never store `running`; one set by hand would otherwise never run
            UPDATE queue.jobs SET status = 'pending', run_at = now(), updated_at = now()
            WHERE id = p_job_id;
            PERFORM pg_notify('queue_jobs', v_job.kind);
        END IF;
        RETURN p_job_id;
    END IF;

    -- Workers never lock finished rows, so this waits only for a concurrent requeue.
    SELECT * INTO v_job FROM queue.jobs WHERE id = p_job_id FOR NO KEY UPDATE;
    IF v_job.requeued_to IS NOT NULL THEN
        RETURN v_job.requeued_to;
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
        RETURN v_new;
    END IF;
    UPDATE queue.jobs SET requeued_to = v_new, updated_at = now() WHERE id = p_job_id;
    RETURN v_new;
END;
$$;

-- Requeue failed jobs in bulk: the latest failed job of each subject that has not been
-- requeued already and has no active successor. Every filter is optional.
-- Returns how many new jobs were enqueued.
CREATE FUNCTION queue.requeue_failed(
    p_kind       text        DEFAULT NULL,
    p_error_code text        DEFAULT NULL,
    p_older_than interval    DEFAULT NULL,
    p_since      timestamptz DEFAULT NULL
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_id    bigint;
    v_count integer := 0;
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
        PERFORM queue.requeue(v_id);
        IF EXISTS (SELECT 1 FROM queue.jobs n
                   WHERE n.requeued_from = v_id AND n.xmin = pg_current_xact_id()::xid) THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END;
$$;

-- Cancel a job that has not started. Returns true when it was cancelled, false when it had
-- already finished; a running (or being claimed) job is refused with SQLSTATE 55006.
CREATE FUNCTION queue.cancel(p_job_id bigint, p_reason text DEFAULT 'cancelled by operator')
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_status text;
BEGIN
    SELECT status INTO v_status FROM queue.jobs WHERE id = p_job_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', p_job_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_status NOT IN ('pending', 'running') THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM queue.jobs WHERE id = p_job_id FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % is running; it cannot be cancelled mid-attempt', p_job_id
            USING ERRCODE = 'object_in_use';
    END IF;
    UPDATE queue.jobs
    SET status = 'cancelled', error_code = 'cancelled', error_message = p_reason,
        completed_at = now(), updated_at = now()
    WHERE id = p_job_id;
    RETURN true;
END;
$$;
