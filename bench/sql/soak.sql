-- The soak's named queries (bench/soak.py).

-- name: enqueue_short
SELECT count(queue.enqueue('soak.short', 's:' || g, '{}'::jsonb))
FROM generate_series(%(start)s::bigint, %(start)s::bigint + %(n)s::int - 1) AS g;

-- name: enqueue_long
SELECT count(queue.enqueue('soak.long', 'l:' || g, jsonb_build_object('seconds', %(seconds)s::float)))
FROM generate_series(1, %(n)s::int) AS g;

-- name: probe_claim
-- What a slot's claim costs on the short kind's index right now (rolled back by the caller).
SELECT count(*)::int AS claimed FROM queue.claim('soak.short', 20, now());

-- name: advisory_take
-- The advisory-lock claim being weighed, in Que's shape: walk the claim index one due job at a
-- time (a recursive CTE, so the lock function runs on exactly the rows walked, never on a
-- whole sorted set) and take the first whose advisory lock is free. No row is locked, so the
-- transaction gets no xid.
WITH RECURSIVE walk AS (
    (SELECT j.id, j.priority, j.run_at, pg_try_advisory_xact_lock(j.id) AS locked
     FROM queue.jobs j
     WHERE j.kind = 'soak.long' AND j.status = 'pending' AND j.run_at <= now()
     ORDER BY j.priority DESC, j.run_at, j.id
     LIMIT 1)
    UNION ALL
    (SELECT n.id, n.priority, n.run_at, pg_try_advisory_xact_lock(n.id)
     FROM walk w
     CROSS JOIN LATERAL (
         SELECT j.id, j.priority, j.run_at FROM queue.jobs j
         WHERE j.kind = 'soak.long' AND j.status = 'pending' AND j.run_at <= now()
           -- the next job after w in the claim order (priority DESC, run_at, id)
           AND (j.priority < w.priority
                OR (j.priority = w.priority AND (j.run_at, j.id) > (w.run_at, w.id)))
         ORDER BY j.priority DESC, j.run_at, j.id
         LIMIT 1) n
     WHERE NOT w.locked)
)
SELECT id FROM walk WHERE locked LIMIT 1;

-- name: advisory_recheck
-- A fresh snapshot after the lock: the job may have finished between the scan's snapshot and
-- the lock (the holder that finished it released the lock at its commit).
SELECT status = 'pending' AS still_pending FROM queue.jobs WHERE id = %(id)s;

-- name: advisory_finish
UPDATE queue.jobs SET status = 'completed', completed_at = now(), attempts = attempts + 1,
                      updated_at = now()
WHERE id = %(id)s;

-- name: my_xid
-- What this session holds back: its xid and xmin as pg_stat_activity shows them.
SELECT backend_xid::text AS xid, backend_xmin::text AS xmin
FROM pg_stat_activity WHERE pid = pg_backend_pid();

-- name: sample_tables
SELECT c.relname AS rel, s.n_live_tup AS live, s.n_dead_tup AS dead,
       s.autovacuum_count AS autovacuums, pg_table_size(c.oid) AS table_bytes,
       pg_indexes_size(c.oid) AS index_bytes
FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE s.schemaname = 'queue' AND c.relname IN ('jobs', 'attempts')
ORDER BY c.relname;

-- name: sample_claim_index
SELECT pg_relation_size('queue.jobs_claim') AS claim_index_bytes;

-- name: sample_horizon
-- The oldest xid a session of this database holds (age in transactions): what vacuum must keep.
SELECT coalesce(max(age(backend_xid)), 0) AS oldest_xid_age,
       coalesce(max(age(backend_xmin)), 0) AS oldest_xmin_age,
       count(*) FILTER (WHERE backend_xid IS NOT NULL)::int AS sessions_with_xid
FROM pg_stat_activity WHERE datname = current_database();

-- name: pickup_by_minute
-- Pickup latency of the short jobs (first attempt's start - creation), per minute after t0
-- (the warm-up before it is minute -1 and left out by the caller).
SELECT floor(extract(epoch FROM j.created_at - %(t0)s::timestamptz) / 60)::int AS minute,
       count(*)::int AS jobs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.started_at - j.created_at))
           * 1000 AS p50_ms,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM a.started_at - j.created_at))
           * 1000 AS p99_ms
FROM queue.jobs j
JOIN queue.attempts a ON a.job_id = j.id AND a.attempt = 1
WHERE j.kind = 'soak.short'
GROUP BY 1 ORDER BY 1;

-- name: untune_tables
-- The server's defaults for the queue tables (the variant measured before migration 0028).
ALTER TABLE queue.jobs RESET (fillfactor, autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay,
    autovacuum_analyze_scale_factor);
ALTER TABLE queue.attempts RESET (autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay,
    autovacuum_vacuum_insert_scale_factor, autovacuum_vacuum_insert_threshold);

-- name: server_now
SELECT now();

-- name: long_completed
SELECT count(*)::int AS n FROM queue.jobs WHERE kind = 'soak.long' AND status = 'completed';
