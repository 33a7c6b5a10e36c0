-- Retention: finished jobs, their attempts and model calls do not grow for ever.
--
-- queue.prune deletes, in bounded batches, jobs that finished longer ago than their
-- status's age (completed and skipped: p_completed; failed and cancelled: p_failed), with
-- their attempts (the statement trigger of 0009), except the latest job of each
-- (kind, subject): it is the history the domain reads (the explanation prefetch skips a
-- question whose latest job ended guard_fail or evidence_missing). Model calls older than
-- p_calls are first added to queue.model_usage_rollup by whole UTC days, so the daily
-- view's figures survive them. queue.maintenance runs it (and the other chores) at most
-- once per interval for the whole fleet, in the worker that wins an advisory lock.

CREATE TABLE queue.model_usage_rollup (
    day               date   NOT NULL,
    kind              text   NOT NULL,
    backend           text   NOT NULL,
    model             text   NOT NULL,
    calls             bigint NOT NULL,
    ok_calls          bigint NOT NULL,
    invalid_calls     bigint NOT NULL,
    error_calls       bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    latency_ms        double precision NOT NULL,
    gate_wait_ms      double precision NOT NULL,
    PRIMARY KEY (day, kind, backend, model)
);

COMMENT ON TABLE queue.model_usage_rollup IS
    'Daily model usage of calls already deleted by queue.prune; queue.model_usage_daily adds it.';

-- Spend per UTC day, job kind, backend and model: live calls plus the pruned days' sums.
DROP VIEW queue.model_usage_daily;
CREATE VIEW queue.model_usage_daily AS
SELECT day, kind, backend, model,
       sum(calls)::bigint                                  AS calls,
       sum(ok_calls)::bigint                               AS ok_calls,
       sum(invalid_calls)::bigint                          AS invalid_calls,
       sum(error_calls)::bigint                            AS error_calls,
       sum(prompt_tokens)::bigint                          AS prompt_tokens,
       sum(completion_tokens)::bigint                      AS completion_tokens,
       (sum(prompt_tokens) + sum(completion_tokens))::bigint AS total_tokens,
       sum(latency_ms)                                     AS latency_ms,
       sum(latency_ms) / nullif(sum(calls), 0)             AS avg_latency_ms,
       sum(gate_wait_ms)                                   AS gate_wait_ms
FROM (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, kind, backend, model,
           count(*) AS calls,
           count(*) FILTER (WHERE outcome = 'ok') AS ok_calls,
           count(*) FILTER (WHERE outcome = 'invalid') AS invalid_calls,
           count(*) FILTER (WHERE outcome = 'error') AS error_calls,
           coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
           coalesce(sum(completion_tokens), 0) AS completion_tokens,
           sum(latency_ms) AS latency_ms, sum(gate_wait_ms) AS gate_wait_ms
    FROM queue.model_calls
    GROUP BY 1, kind, backend, model
    UNION ALL
    SELECT day, kind, backend, model, calls, ok_calls, invalid_calls, error_calls,
           prompt_tokens, completion_tokens, latency_ms, gate_wait_ms
    FROM queue.model_usage_rollup
) u
GROUP BY day, kind, backend, model;

-- What prune deletes (or would, with p_dry_run), at most p_batch rows of each: one row per
-- table; call it again while it deletes a whole batch. Ages under an hour are
-- refused, so no caller can empty the history by accident.
CREATE FUNCTION queue.prune(
    p_completed interval DEFAULT interval '7 days',
    p_failed    interval DEFAULT interval '30 days',
    p_calls     interval DEFAULT interval '90 days',
    p_batch     integer  DEFAULT 5000,
    p_dry_run   boolean  DEFAULT false
) RETURNS TABLE (item text, deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_batch  integer := least(greatest(p_batch, 1), 100000);
    v_ids    bigint[];
    v_before date;
    v_calls  bigint;
BEGIN
    IF least(p_completed, p_failed, p_calls) < interval '1 hour' THEN
        RAISE EXCEPTION 'retention ages must be at least an hour'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT coalesce(array_agg(x.id), '{}') INTO v_ids FROM (
        SELECT j.id FROM queue.jobs j
        WHERE ((j.status IN ('completed', 'skipped')
                AND j.completed_at < now() - p_completed)
            OR (j.status IN ('failed', 'cancelled')
                AND j.completed_at < now() - p_failed))
          -- the latest job of its subject stays: the domain reads its outcome
          AND (j.subject IS NULL
               OR EXISTS (SELECT 1 FROM queue.jobs n
                          WHERE n.kind = j.kind AND n.subject = j.subject AND n.id > j.id))
        ORDER BY j.id
        LIMIT v_batch
        FOR UPDATE OF j SKIP LOCKED) x;
    IF NOT p_dry_run AND cardinality(v_ids) > 0 THEN
        -- a requeued job's link to a deleted one goes with it
        UPDATE queue.jobs SET requeued_from = NULL
        WHERE requeued_from = ANY (v_ids) AND NOT (id = ANY (v_ids));
        DELETE FROM queue.jobs WHERE id = ANY (v_ids);
    END IF;
    item := 'jobs'; deleted := cardinality(v_ids); RETURN NEXT;

    -- model calls of the UTC days before the cut: deleted and added to the rollup in one
    -- statement, so the daily view counts each call once at every moment
    v_before := ((now() - p_calls) AT TIME ZONE 'UTC')::date;
    IF p_dry_run THEN
        SELECT count(*) INTO v_calls FROM (
            SELECT 1 FROM queue.model_calls
            WHERE created_at < v_before::timestamp AT TIME ZONE 'UTC' LIMIT v_batch) c;
    ELSE
        WITH gone AS (
            DELETE FROM queue.model_calls
            WHERE id IN (SELECT id FROM queue.model_calls
                         WHERE created_at < v_before::timestamp AT TIME ZONE 'UTC'
                         ORDER BY created_at LIMIT v_batch)
            RETURNING *
        ), days AS (
            INSERT INTO queue.model_usage_rollup AS r
            SELECT (created_at AT TIME ZONE 'UTC')::date, kind, backend, model, count(*),
                   count(*) FILTER (WHERE outcome = 'ok'),
                   count(*) FILTER (WHERE outcome = 'invalid'),
                   count(*) FILTER (WHERE outcome = 'error'),
                   coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
                   sum(latency_ms), sum(gate_wait_ms)
            FROM gone
            GROUP BY 1, kind, backend, model
            ON CONFLICT (day, kind, backend, model) DO UPDATE
            SET calls = r.calls + EXCLUDED.calls,
                ok_calls = r.ok_calls + EXCLUDED.ok_calls,
                invalid_calls = r.invalid_calls + EXCLUDED.invalid_calls,
                error_calls = r.error_calls + EXCLUDED.error_calls,
                prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
                completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
                latency_ms = r.latency_ms + EXCLUDED.latency_ms,
                gate_wait_ms = r.gate_wait_ms + EXCLUDED.gate_wait_ms
            RETURNING 1
        )
        SELECT count(*) INTO v_calls FROM gone;
    END IF;
    item := 'model_calls'; deleted := v_calls; RETURN NEXT;
END;
$$;

-- The fleet's chores, at most once per p_every for all workers together: the worker whose
-- call wins the advisory lock and finds the last run old enough does it; the others return
-- at once. Returns what prune deleted (nothing when it was not this worker's turn).
CREATE TABLE queue.maintenance_runs (
    chore       text PRIMARY KEY,
    last_run_at timestamptz NOT NULL
);

CREATE FUNCTION queue.maintenance(
    p_every     interval,
    p_completed interval,
    p_failed    interval,
    p_calls     interval,
    p_batch     integer DEFAULT 5000
) RETURNS TABLE (item text, deleted bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('queue.maintenance')) THEN
        RETURN;  -- another worker is at it
    END IF;
    IF EXISTS (SELECT 1 FROM queue.maintenance_runs
               WHERE chore = 'prune'
                 AND last_run_at > now() - greatest(p_every, interval '1 minute')) THEN
        RETURN;
    END IF;
    INSERT INTO queue.maintenance_runs (chore, last_run_at) VALUES ('prune', now())
    ON CONFLICT (chore) DO UPDATE SET last_run_at = EXCLUDED.last_run_at;
    RETURN QUERY SELECT * FROM queue.prune(p_completed, p_failed, p_calls, p_batch);
END;
$$;

REVOKE ALL ON queue.model_usage_rollup, queue.maintenance_runs FROM PUBLIC;
GRANT SELECT ON queue.model_usage_daily, queue.model_usage_rollup, queue.maintenance_runs
    TO llm_worker, llm_operator;
REVOKE ALL ON FUNCTION queue.prune(interval, interval, interval, integer, boolean),
    queue.maintenance(interval, interval, interval, interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION queue.maintenance(interval, interval, interval, interval, integer)
    TO llm_worker;
GRANT EXECUTE ON FUNCTION queue.prune(interval, interval, interval, integer, boolean)
    TO llm_operator;
