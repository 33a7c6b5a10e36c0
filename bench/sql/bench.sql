-- Queries of the benchmark scripts in bench/ (never used by the worker itself). Each sits
-- under a `-- name:` header, loaded with worker.queries.parse like the worker's own queries.

-- name: reset_schemas
DROP SCHEMA IF EXISTS app CASCADE;
DROP SCHEMA IF EXISTS queue CASCADE;

-- name: enqueue_many
-- The application's way in: queue.enqueue per job, many in one statement and transaction.
SELECT count(queue.enqueue(%(kind)s, 'i:' || g, jsonb_build_object('i', g)))
FROM generate_series(%(start)s::int, %(start)s::int + %(n)s::int - 1) AS g;

-- name: enqueue_one
SELECT queue.enqueue(%(kind)s, 'i:' || %(i)s::int, jsonb_build_object('i', %(i)s::int));

-- name: pending
SELECT count(*)::int AS pending FROM queue.jobs WHERE status = 'pending';

-- name: job_span
-- When the jobs of a kind finished, in the server's clock (the same host clock as time.time()).
SELECT count(*)::int AS jobs,
       count(*) FILTER (WHERE status = 'completed')::int AS completed,
       extract(epoch FROM min(completed_at))::float8 AS first_done,
       extract(epoch FROM max(completed_at))::float8 AS last_done
FROM queue.jobs WHERE kind = %(kind)s;

-- name: model_call_stats
SELECT count(*)::int AS calls,
       count(*) FILTER (WHERE outcome = 'ok')::int AS ok,
       sum(latency_ms)::float8 AS latency_ms_sum,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)::float8 AS latency_ms_p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)::float8 AS latency_ms_p99,
       max(latency_ms)::float8 AS latency_ms_max
FROM queue.model_calls WHERE kind = %(kind)s;

-- name: server_settings
SELECT name, setting, unit FROM pg_settings
WHERE name IN ('server_version', 'synchronous_commit', 'fsync', 'wal_sync_method',
               'full_page_writes', 'commit_delay', 'shared_buffers', 'max_connections',
               'wal_level', 'max_wal_size', 'checkpoint_timeout', 'work_mem', 'wal_buffers',
               'jit', 'effective_io_concurrency')
ORDER BY name;
