-- Runtime queries of the queue core. Each query sits under a `-- name:` header and takes
-- %(param)s placeholders; worker/queries.py loads them once.

-- name: claim_jobs
-- Lock due pending jobs of one kind for the claiming transaction, which stays open while the
-- handlers run; each row carries the claim's xid and the job's receipt, which recording,
-- finishing and giving back its attempt require (sql/migrations/0020_*.sql). NULL %(now)s
-- means the server's now() (a test passes a later time instead of waiting).
SELECT * FROM queue.claim(%(kind)s, %(limit)s, %(now)s::timestamptz);

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
-- starts): one attempt row per job that has attempts left, for the claim whose receipts
-- these are; idempotent per claim (queue.record_attempts).
SELECT * FROM queue.record_attempts(%(job_ids)s::bigint[], %(receipts)s::text[],
                                    %(claim_xid)s::xid8, %(worker_id)s);

-- name: finish_jobs
-- Write every claimed job's outcome in the claiming transaction, right before COMMIT. The
-- function checks the receipts against this transaction, then fences on ownership: if the
-- claim lost a job or an attempt meanwhile it raises (queue.claim_lost, SQLSTATE LW001), so
-- the COMMIT sent behind it in the same round trip rolls everything back.
SELECT * FROM queue.finish_jobs(
    %(worker_id)s, %(job_ids)s::bigint[], %(receipts)s::text[], %(attempt_ids)s::bigint[],
    %(attempts)s::int[], %(statuses)s::text[], %(outcomes)s::text[], %(error_codes)s::text[],
    %(error_messages)s::text[], %(retry_in)s::float8[], %(results)s::jsonb[]);

-- name: apply_reruns
-- Sent right after finish_jobs, in the same round trip: rerun requests an enqueue left while
-- these jobs ran (sql/migrations/0011_reruns.sql).
SELECT queue.apply_reruns(%(job_ids)s::bigint[]) AS enqueued;

-- name: apply_stray_reruns
-- The heartbeat's sweep: requests committed after their job's finish looked for them.
SELECT queue.apply_reruns() AS enqueued;

-- name: release_attempts
-- Graceful shutdown: attempts of a claim that is rolled back before its handlers finished
-- (or of jobs it never started) do not count against the jobs; each with its receipt.
SELECT queue.release_attempts(%(attempt_ids)s::bigint[], %(receipts)s::text[]) AS released;

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

-- name: live_workers_by_kind
-- For each kind a live worker runs or a pending job waits for: how many live workers run
-- it (the liveness of live_workers). 0 with jobs waiting: nobody will run them.
WITH live AS (
    SELECT unnest(kinds) AS kind
    FROM queue.workers
    WHERE heartbeat_at > now() - interval '2 minutes'
)
SELECT k.kind, count(l.kind)::int AS workers
FROM (SELECT kind FROM live
      UNION
      SELECT DISTINCT kind FROM queue.jobs WHERE status = 'pending') k
LEFT JOIN live l USING (kind)
GROUP BY k.kind
ORDER BY k.kind;

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

-- name: pause
SELECT queue.pause(%(kind)s, %(reason)s) AS paused;

-- name: resume
SELECT queue.resume(%(kind)s) AS resumed;

-- name: paused_kinds
SELECT kind, paused_at, paused_by, coalesce(reason, '') AS reason
FROM queue.paused_kinds
ORDER BY kind;

-- name: schedule
-- `python -m worker schedule`: declare or replace a cron schedule (migration 0026).
SELECT queue.schedule(%(name)s, %(kind)s, %(cron)s, %(payload)s::jsonb) AS created;

-- name: unschedule
SELECT queue.unschedule(%(name)s) AS removed;

-- name: schedules
-- `status`: every schedule, with its last slot and that slot's job.
SELECT s.name, s.kind, s.cron, s.payload::text AS payload, s.last_fired_at, s.last_job_id,
       j.status AS last_job_status
FROM queue.schedules s
LEFT JOIN queue.jobs j ON j.id = s.last_job_id
ORDER BY s.name;

-- name: fire_schedules
-- Every heartbeat: enqueue the schedules' due slots, if this worker wins the turn; what it
-- enqueued (sql/migrations/0026_schedules.sql).
SELECT name, slot, job_id FROM queue.fire_schedules();

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

-- name: maintenance
-- Every heartbeat: the fleet's chores, if due and this worker wins the advisory lock
-- (sql/migrations/0024_retention.sql); no rows otherwise.
SELECT item, n FROM queue.maintenance(
    make_interval(secs => %(every_s)s), make_interval(secs => %(completed_s)s),
    make_interval(secs => %(failed_s)s), make_interval(secs => %(calls_s)s), %(batch)s,
    %(retry_cap)s);

-- name: prune
-- `python -m worker prune` (the retention part of the chores only): one batch of retention by the operator, or what it would delete.
SELECT item, deleted FROM queue.prune(
    make_interval(secs => %(completed_s)s), make_interval(secs => %(failed_s)s),
    make_interval(secs => %(calls_s)s), %(batch)s, %(dry_run)s);

-- name: fail_unknown_kinds
SELECT queue.fail_unknown_kinds(make_interval(secs => %(grace_s)s)) AS failed;
