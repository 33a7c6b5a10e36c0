-- Runtime queries of the model layer (worker/models/): accounting, gates, start-up checks.

-- name: rate_take
-- Seconds until one more request fits the endpoint's limits; 0: taken, send it now
-- (sql/migrations/0023_rate_limits.sql).
SELECT queue.rate_take(%(key)s, %(requests)s, %(tokens_max)s, %(window)s, %(tokens)s) AS wait;

-- name: rate_block
-- The server answered 429: nobody in the fleet sends to the endpoint until its retry-after.
SELECT queue.rate_block(%(key)s, %(seconds)s);

-- name: record_model_call
-- On the accounting connection (autocommit): the row survives a rolled-back job.
INSERT INTO queue.model_calls (
    job_id, attempt_id, kind, call, backend, model, gate, prompt_version, round,
    prompt_tokens, completion_tokens, latency_ms, gate_wait_ms, outcome, error_code)
VALUES (
    %(job_id)s, %(attempt_id)s, %(kind)s, %(call)s, %(backend)s, %(model)s, %(gate)s,
    %(prompt_version)s, %(round)s, %(prompt_tokens)s, %(completion_tokens)s,
    %(latency_ms)s, %(gate_wait_ms)s, %(outcome)s, %(error_code)s)
RETURNING id;

-- name: tokens_spent_today
-- A kind's tokens today (UTC), for its daily budget, and the seconds until the day ends.
SELECT coalesce(sum(coalesce(c.prompt_tokens, 0) + coalesce(c.completion_tokens, 0)), 0)::bigint
           AS spent,
       extract(epoch FROM date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day'
                          - (now() AT TIME ZONE 'UTC'))::float8 AS resets_in
FROM queue.model_calls c
WHERE c.kind = %(kind)s
  AND c.created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';

-- name: gate_try_lock
-- Two-key advisory locks live apart from the one-key (bigint) space the migrator uses.
SELECT pg_try_advisory_lock(%(class)s::int4, %(slot)s::int4) AS locked;

-- name: gate_unlock
SELECT pg_advisory_unlock(%(class)s::int4, %(slot)s::int4) AS unlocked;

-- name: vector_column_dimension
-- The declared dimension of a pgvector column (its typmod), or NULL for a bare `vector`.
SELECT CASE WHEN a.atttypmod > 0 THEN a.atttypmod END AS dimension
FROM pg_attribute a
WHERE a.attrelid = %(table)s::regclass AND a.attname = %(column)s AND NOT a.attisdropped;

-- name: gate_slots_held
-- Slots of a cross-process gate held right now: two-key advisory locks (gate class, slot).
SELECT count(*)::int AS held
FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = %(classid)s::oid;
