-- Model accounting: one row per model round trip (a chat reply or an embedding batch).
--
-- Rows are written on a connection of their own and committed at once, so tokens spent by
-- an attempt whose claiming transaction later rolls back are still on record.

CREATE TABLE queue.model_calls (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- tokens are money: a deleted job keeps its spend, unattributed
    job_id            bigint      REFERENCES queue.jobs (id) ON DELETE SET NULL,
    attempt_id        bigint      REFERENCES queue.attempts (id) ON DELETE SET NULL,
    kind              text        NOT NULL,
    call              text        NOT NULL CHECK (call IN ('chat', 'embedding')),
    backend           text        NOT NULL,
    model             text        NOT NULL,
    gate              text,
    prompt_version    integer,
    -- 1 for the first reply, 2 for the one retry that showed the model its error
    round             smallint    NOT NULL DEFAULT 1 CHECK (round >= 1),
    prompt_tokens     integer     CHECK (prompt_tokens >= 0),
    completion_tokens integer     CHECK (completion_tokens >= 0),
    latency_ms        double precision NOT NULL CHECK (latency_ms >= 0),
    gate_wait_ms      double precision NOT NULL DEFAULT 0 CHECK (gate_wait_ms >= 0),
    -- ok: usable; invalid: unusable reply shown back to the model; error: the call failed
    outcome           text        NOT NULL CHECK (outcome IN ('ok', 'invalid', 'error')),
    error_code        text,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK ((outcome = 'ok') = (error_code IS NULL))
);

COMMENT ON TABLE queue.model_calls IS
    'One row per model round trip, committed independently of the job''s transaction.';

CREATE INDEX model_calls_job ON queue.model_calls (job_id);
CREATE INDEX model_calls_created ON queue.model_calls (created_at);

-- Spend per job, over all of its attempts.
CREATE VIEW queue.model_usage_per_job AS
SELECT job_id,
       min(kind)                                        AS kind,
       count(*)::bigint                                 AS calls,
       count(DISTINCT attempt_id)::bigint               AS attempts,
       count(*) FILTER (WHERE outcome <> 'ok')::bigint  AS failed_calls,
       coalesce(sum(prompt_tokens), 0)::bigint          AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint      AS completion_tokens,
       sum(latency_ms)                                  AS latency_ms,
       sum(gate_wait_ms)                                AS gate_wait_ms,
       min(created_at)                                  AS first_call_at,
       max(created_at)                                  AS last_call_at
FROM queue.model_calls
WHERE job_id IS NOT NULL
GROUP BY job_id;

-- Spend per UTC day, job kind, backend and model.
CREATE VIEW queue.model_usage_daily AS
SELECT (created_at AT TIME ZONE 'UTC')::date                AS day,
       kind,
       backend,
       model,
       count(*)::bigint                                     AS calls,
       count(*) FILTER (WHERE outcome = 'ok')::bigint       AS ok_calls,
       count(*) FILTER (WHERE outcome = 'invalid')::bigint  AS invalid_calls,
       count(*) FILTER (WHERE outcome = 'error')::bigint    AS error_calls,
       coalesce(sum(prompt_tokens), 0)::bigint              AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint          AS completion_tokens,
       coalesce(sum(prompt_tokens), 0)::bigint
           + coalesce(sum(completion_tokens), 0)::bigint    AS total_tokens,
       sum(latency_ms)                                      AS latency_ms,
       avg(latency_ms)                                      AS avg_latency_ms,
       sum(gate_wait_ms)                                    AS gate_wait_ms
FROM queue.model_calls
GROUP BY 1, kind, backend, model;
