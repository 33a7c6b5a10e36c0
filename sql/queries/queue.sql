-- Runtime queries of the queue core. Each query sits under a `-- name:` header and takes
-- %(param)s placeholders; worker/queries.py loads them once.

-- name: claim_jobs
-- Lock due pending jobs of one kind for the claiming transaction. The transaction stays
-- open while the handlers run, and its xid identifies the owner in queue.attempts. The
-- payload comes as text: the executor decodes each job's alone (executor.decode_payload).
-- Due means run_at <= %(now)s; NULL means the server's now() (a test passes a later time
-- instead of waiting).
SELECT j.id, j.kind, j.subject, j.payload::text AS payload, j.priority, j.max_attempts,
       j.created_at, pg_current_xact_id()::text AS claim_xid
FROM queue.jobs j
WHERE j.kind = %(kind)s
  AND j.status = 'pending'
  AND j.run_at <= coalesce(%(now)s::timestamptz, now())
ORDER BY j.priority DESC, j.run_at, j.id
LIMIT %(limit)s
FOR NO KEY UPDATE OF j SKIP LOCKED;

-- name: next_due
-- After a claim found nothing due: seconds until the kind's next scheduled job (a future
-- run_at given to queue.enqueue, a retry's backoff), so the worker wakes for it then
-- instead of at its next poll. NULL when nothing is scheduled. %(now)s as in claim_jobs.
SELECT extract(epoch FROM min(j.run_at) - coalesce(%(now)s::timestamptz, now()))::float8
       AS seconds
FROM queue.jobs j
WHERE j.kind = %(kind)s AND j.status = 'pending'
  AND j.run_at > coalesce(%(now)s::timestamptz, now());

-- name: record_attempts
-- Runs on the bookkeeping connection (its own transaction, committed before any handler
-- starts). Counts earlier attempts, except those released on a graceful shutdown and the
-- first %(free_reruns)s superseded because the job's input changed; a job that already used
-- all of them gets no new attempt and is failed by the caller.
-- Idempotent per claim: if a first try committed but its reply was lost, the retry finds
-- the rows it made instead of counting the attempts twice.
WITH j AS (
    SELECT x.id, x.max_attempts,
           (SELECT count(*) FILTER (WHERE a.outcome IS DISTINCT FROM 'superseded')
                   + greatest(count(*) FILTER (WHERE a.outcome = 'superseded')
                              - %(free_reruns)s, 0)
            FROM queue.attempts a
            WHERE a.job_id = x.id
              AND a.claim_xid <> %(claim_xid)s::xid8
              AND a.outcome IS DISTINCT FROM 'released')::int AS prior
    FROM queue.jobs x
    WHERE x.id = ANY(%(job_ids)s::bigint[])
), ins AS (
    INSERT INTO queue.attempts (job_id, attempt, worker_id, claim_xid)
    SELECT j.id, j.prior + 1, %(worker_id)s, %(claim_xid)s::xid8
    FROM j
    WHERE j.prior < j.max_attempts
    ON CONFLICT (job_id, claim_xid) DO NOTHING
    RETURNING id, job_id, attempt
), earlier AS (
    SELECT a.id, a.job_id, a.attempt FROM queue.attempts a
    WHERE a.claim_xid = %(claim_xid)s::xid8 AND a.job_id = ANY(%(job_ids)s::bigint[])
)
SELECT j.id AS job_id, j.prior,
       coalesce(ins.id, earlier.id) AS attempt_id,
       coalesce(ins.attempt, earlier.attempt) AS attempt,
       -- for a job with no attempt left: how its last one ended (why it is spent)
       CASE WHEN ins.id IS NULL AND earlier.id IS NULL THEN
           (SELECT a.outcome FROM queue.attempts a
            WHERE a.job_id = j.id AND a.claim_xid <> %(claim_xid)s::xid8
            ORDER BY a.id DESC LIMIT 1)
       END AS last_outcome
FROM j
LEFT JOIN ins ON ins.job_id = j.id
LEFT JOIN earlier ON earlier.job_id = j.id;

-- name: finish_jobs
-- Write every claimed job's outcome in the claiming transaction, right before COMMIT.
-- Ownership fence: a job row is changed only while still pending, an attempt row only when
-- this very transaction claimed it; if either count falls short the statement raises
-- (queue.claim_lost, SQLSTATE LW001), so the COMMIT sent behind it in the same round trip
-- rolls everything back.
-- Attempts of these jobs left open by workers that died are closed as worker_lost.
WITH o AS (
    SELECT *
    FROM unnest(%(job_ids)s::bigint[], %(attempt_ids)s::bigint[], %(attempts)s::int[],
                %(statuses)s::text[], %(outcomes)s::text[], %(error_codes)s::text[],
                %(error_messages)s::text[], %(retry_in)s::float8[], %(results)s::jsonb[])
         AS o(job_id, attempt_id, attempts, status, outcome, error_code, error_message,
              retry_in, result)
), done AS (
    UPDATE queue.jobs j
    SET status        = o.status,
        attempts      = o.attempts,
        error_code    = o.error_code,
        error_message = o.error_message,
        result        = coalesce(o.result, j.result),
        run_at        = CASE WHEN o.status = 'pending'
                             THEN clock_timestamp() + make_interval(secs => o.retry_in)
                             ELSE j.run_at END,
        started_at    = now(),
        completed_at  = CASE WHEN o.status = 'pending' THEN NULL ELSE clock_timestamp() END,
        worker_id     = %(worker_id)s,
        updated_at    = clock_timestamp()
    FROM o
    WHERE j.id = o.job_id AND j.status = 'pending'
    RETURNING j.id
), att AS (
    UPDATE queue.attempts a
    SET finished_at   = clock_timestamp(),
        outcome       = o.outcome,
        error_code    = o.error_code,
        error_message = o.error_message
    FROM o
    WHERE a.id = o.attempt_id AND a.claim_xid = pg_current_xact_id() AND a.finished_at IS NULL
    RETURNING a.id
), lost AS (
    UPDATE queue.attempts a
    SET finished_at = clock_timestamp(), outcome = 'worker_lost', error_code = 'worker_lost'
    FROM o
    WHERE a.job_id = o.job_id AND a.finished_at IS NULL
      AND a.claim_xid <> pg_current_xact_id()
    RETURNING a.id
), counts AS (
    SELECT (SELECT count(*) FROM done)::int AS jobs,
           cardinality(%(job_ids)s::bigint[]) AS expected_jobs,
           (SELECT count(*) FROM att)::int AS attempts,
           %(expected_attempts)s::int AS expected_attempts,
           (SELECT count(*) FROM lost)::int AS lost
)
SELECT c.jobs, c.attempts, c.lost,
       CASE WHEN c.jobs = c.expected_jobs AND c.attempts = c.expected_attempts THEN 0
            ELSE queue.claim_lost(c.jobs, c.expected_jobs, c.attempts, c.expected_attempts)
       END AS fence
FROM counts c;

-- name: apply_reruns
-- Sent right after finish_jobs, in the same round trip: rerun requests an enqueue left while
-- these jobs ran (sql/migrations/0011_reruns.sql).
SELECT queue.apply_reruns(%(job_ids)s::bigint[]) AS enqueued;

-- name: apply_stray_reruns
-- The heartbeat's sweep: requests committed after their job's finish looked for them.
SELECT queue.apply_reruns() AS enqueued;

-- name: release_attempts
-- Graceful shutdown: the claiming transaction was rolled back before its handlers finished,
-- so these attempts do not count against the jobs.
UPDATE queue.attempts
SET finished_at = clock_timestamp(), outcome = 'released'
WHERE id = ANY(%(attempt_ids)s::bigint[]) AND finished_at IS NULL;

-- name: job_savepoint
-- A job's savepoint in the claiming transaction, opened before its handler runs
-- (worker/savepoints.py).
SAVEPOINT worker_job;

-- name: job_savepoint_next
-- The next job's savepoint in place of the previous job's, whose writes join the claim: two
-- statements in one round trip (sent without parameters, so as one simple query).
RELEASE SAVEPOINT worker_job;
SAVEPOINT worker_job;

-- name: job_savepoint_release
-- After a handler left the transaction aborted: the server refuses it, with the error the
-- job then fails with.
RELEASE SAVEPOINT worker_job;

-- name: job_savepoint_rollback
-- A failed job: its writes are undone; the savepoint stays until the next job's.
ROLLBACK TO SAVEPOINT worker_job;

-- name: bookkeeping_setup
-- Attempt rows must be durable before the handler runs: a job that crashes its own backend
-- (a segfault, the OOM killer) makes the server restart and replay its WAL, and an attempt
-- committed asynchronously is lost there, so that job would run again as attempt 1 forever.
-- The server's setting is kept (with synchronous replicas it may ask for more), unless it
-- is `off`. One flush per claim: a claim's attempts are one statement.
SELECT set_config('synchronous_commit',
                  CASE current_setting('synchronous_commit') WHEN 'off' THEN 'local'
                       ELSE current_setting('synchronous_commit') END,
                  false);

-- name: stats
SELECT kind, state, jobs, oldest_pending_age
FROM queue.stats
ORDER BY kind, state;

-- name: live_workers
-- Workers with a heartbeat in the last two minutes (the liveness queue.fail_unknown_kinds
-- uses), with the kinds each runs.
SELECT worker_id, array_to_string(kinds, ',') AS kinds, started_at,
       now() - heartbeat_at AS heartbeat_age
FROM queue.workers
WHERE heartbeat_at > now() - interval '2 minutes'
ORDER BY worker_id;

-- name: recent_failures
SELECT kind, error_code, count(*)::int AS jobs, max(completed_at) AS last_at
FROM queue.jobs
WHERE status = 'failed' AND completed_at >= now() - %(since)s::interval
GROUP BY kind, error_code
ORDER BY jobs DESC, kind;

-- name: requeue
SELECT queue.requeue(%(job_id)s) AS job_id;

-- name: requeue_failed
SELECT queue.requeue_failed(%(kind)s, %(error_code)s, %(older_than)s::interval,
                            %(since)s::timestamptz) AS jobs;

-- name: cancel
SELECT queue.cancel(%(job_id)s) AS cancelled;

-- name: listen
LISTEN queue_jobs;

-- name: ping
SELECT 1;

-- name: worker_alive
-- Start-up (started = true) and every heartbeat: this worker's row, recreated if someone
-- removed it, and the last time its kinds were served (queue.kinds_seen).
SELECT queue.worker_alive(%(worker_id)s, %(kinds)s, %(started)s);

-- name: worker_stopped
SELECT queue.worker_stopped(%(worker_id)s);

-- name: fail_unknown_kinds
SELECT queue.fail_unknown_kinds(make_interval(secs => %(grace_s)s)) AS failed;
