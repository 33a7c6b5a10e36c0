-- Queries only the tests read (tests/support/db.py `query`): what the model accounting
-- recorded, through the table and the views an operator would use.

-- name: model_calls_for_job
SELECT id, attempt_id, kind, call, backend, model, gate, prompt_version, round,
       prompt_tokens, completion_tokens, latency_ms, gate_wait_ms, outcome, error_code,
       created_at
FROM queue.model_calls
WHERE job_id = %(job_id)s
ORDER BY id;

-- name: model_usage_for_job
SELECT job_id, kind, calls, attempts, failed_calls, prompt_tokens, completion_tokens,
       latency_ms, gate_wait_ms, first_call_at, last_call_at
FROM queue.model_usage_per_job
WHERE job_id = %(job_id)s;

-- name: model_usage_daily
SELECT day, kind, backend, model, calls, ok_calls, invalid_calls, error_calls,
       prompt_tokens, completion_tokens, total_tokens, latency_ms, avg_latency_ms,
       gate_wait_ms
FROM queue.model_usage_daily
WHERE day >= %(since)s::date
ORDER BY day, kind, backend, model;
