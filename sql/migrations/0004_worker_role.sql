-- The least-privilege role the worker runs as: exactly the grants the queue core needs, no
-- DDL anywhere, no access to tables it does not use. Job kinds grant what they read and the
-- columns they write in their own migrations. Log in as a member of it, e.g.
--   CREATE ROLE worker_login LOGIN PASSWORD '…' IN ROLE llm_worker;
-- Roles are cluster-wide, so this migration creates it only where it does not exist yet.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'llm_worker') THEN
        CREATE ROLE llm_worker NOLOGIN;
    END IF;
END;
$$;

GRANT USAGE ON SCHEMA queue, app TO llm_worker;

-- claim (SELECT … FOR NO KEY UPDATE needs UPDATE) and finish (these columns only)
GRANT SELECT ON queue.jobs TO llm_worker;
GRANT UPDATE (status, attempts, error_code, error_message, result, run_at, started_at,
              completed_at, worker_id, updated_at)
    ON queue.jobs TO llm_worker;

-- attempt rows: written by the bookkeeping connection, closed by the claim
GRANT SELECT, INSERT ON queue.attempts TO llm_worker;
GRANT UPDATE (finished_at, outcome, error_code, error_message) ON queue.attempts TO llm_worker;

-- model accounting: one row per model round trip (RETURNING id needs SELECT)
GRANT SELECT, INSERT ON queue.model_calls TO llm_worker;

-- status and metrics
GRANT SELECT ON queue.job_states, queue.stats, queue.migrations, queue.model_usage_per_job,
                queue.model_usage_daily TO llm_worker;
