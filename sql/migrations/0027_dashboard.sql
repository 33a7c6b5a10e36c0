-- The operator's web dashboard (python -m worker dashboard): its role and its indexes.
--
-- `llm_dashboard` (no login; log in as a member of it, or let the dashboard SET ROLE to it)
-- reads the queue's tables and views, the courses and questions, and calls the operator
-- functions its buttons stand for: requeue, cancel, pause, resume and
-- app.request_explanation. queue.requeue and queue.cancel run with the caller's rights, so it
-- holds the job columns they write, as llm_operator does. It reads no user (no e-mail
-- addresses), no claim secret, and cannot prune, backfill or enqueue.
--
-- Three indexes serve the dashboard's lists at any size of history (tests/dashboard checks
-- their plans with 100,000 jobs): the job list by state and kind in id order, the failures in
-- the order they failed, and finished jobs by the time they finished (throughput of the last
-- hour and day). Each costs every job a little at insert and at completion.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'llm_dashboard') THEN
        CREATE ROLE llm_dashboard NOLOGIN;
    END IF;
END;
$$;

GRANT USAGE ON SCHEMA queue, app TO llm_dashboard;
GRANT SELECT ON queue.jobs, queue.attempts, queue.workers, queue.paused_kinds,
    queue.model_calls, queue.model_usage_daily, queue.model_usage_rollup,
    queue.model_usage_per_job, queue.job_states, queue.stats, queue.kinds_seen
    TO llm_dashboard;
GRANT INSERT, UPDATE ON queue.jobs TO llm_dashboard;
GRANT USAGE ON SEQUENCE queue.jobs_id_seq TO llm_dashboard;  -- a requeue inserts a job
GRANT SELECT ON app.courses, app.questions TO llm_dashboard;
GRANT EXECUTE ON FUNCTION queue.requeue(bigint), queue.requeue_job(bigint),
    queue.cancel(bigint, text), queue.is_running(bigint), queue.pause(text, text),
    queue.resume(text), app.request_explanation(bigint, boolean),
    app.course_weakness_history(bigint)
    TO llm_dashboard;

CREATE INDEX jobs_status_kind_id ON queue.jobs (status, kind, id);
CREATE INDEX jobs_failed_at ON queue.jobs (completed_at DESC, id DESC) WHERE status = 'failed';
CREATE INDEX jobs_finished_at ON queue.jobs (completed_at) WHERE completed_at IS NOT NULL;
