-- The dashboard's reads (worker/dashboard/). Every list is keyset-paginated and served by an
-- index (migration 0027; tests/dashboard/test_plans.py checks the plans with 100,000 jobs). A
-- NULL filter means "any"; the connections never prepare statements, so each is planned
-- with its values and an unused filter folds away.

-- name: dash_set_role
-- Every dashboard connection acts as its role, whatever login DATABASE_URL names.
SELECT set_config('role', %(role)s, false) AS role;

-- name: dash_active
-- Jobs not finished yet, by kind and live state: due and scheduled, the oldest due one's age.
SELECT kind, state, count(*)::bigint AS jobs,
       count(*) FILTER (WHERE run_at > now())::bigint AS scheduled,
       max(now() - run_at) FILTER (WHERE state = 'pending' AND run_at <= now())
           AS oldest_pending_age
FROM queue.job_states
WHERE status IN ('pending', 'running')
GROUP BY kind, state
ORDER BY kind, state;

-- name: dash_finished
-- Throughput: jobs that finished in the last hour and day, by kind and status.
SELECT kind, status,
       count(*) FILTER (WHERE completed_at >= now() - interval '1 hour')::bigint AS last_hour,
       count(*)::bigint AS last_day
FROM queue.jobs
WHERE completed_at IS NOT NULL AND completed_at >= now() - interval '1 day'
GROUP BY kind, status
ORDER BY kind, status;

-- name: dash_jobs
-- Jobs newest first, of one stored status (NULL: any) and kind (NULL: any), before an id.
SELECT id, kind, subject, status, attempts, max_attempts, error_code, created_at,
       completed_at
FROM queue.jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND id < coalesce(%(before)s::bigint, 9223372036854775807)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: dash_failure_groups
-- Failed jobs of the window by kind and error code, with the latest message of each group.
SELECT kind, error_code, count(*)::bigint AS jobs, max(completed_at) AS last_at,
       (array_agg(error_message ORDER BY completed_at DESC, id DESC))[1] AS last_message
FROM queue.jobs
WHERE status = 'failed' AND completed_at >= now() - %(since)s::interval
GROUP BY kind, error_code
ORDER BY jobs DESC, kind, error_code;

-- name: dash_failures
-- Failed jobs, latest failure first, with what they stored (the model's reply excerpt on
-- parse_fail, its answer and the key on guard_fail), before a (completed_at, id) cursor.
SELECT id, kind, subject, error_code, error_message, attempts, completed_at, result,
       requeued_to
FROM queue.jobs
WHERE status = 'failed'
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(error_code)s::text IS NULL OR error_code = %(error_code)s::text)
  AND (completed_at, id) < (coalesce(%(before_at)s::timestamptz, 'infinity'),
                            coalesce(%(before_id)s::bigint, 0))
ORDER BY completed_at DESC, id DESC
LIMIT %(limit)s;

-- name: dash_job
-- One job with its live state.
SELECT * FROM queue.job_states WHERE id = %(id)s;

-- name: dash_job_attempts
SELECT attempt, worker_id, started_at, finished_at, finished_at - started_at AS took, outcome,
       error_code, error_message
FROM queue.attempts
WHERE job_id = %(id)s
ORDER BY attempt, id;

-- name: dash_job_calls
SELECT created_at, call, backend, model, gate, prompt_version, round, prompt_tokens,
       completion_tokens, latency_ms, gate_wait_ms, outcome, error_code
FROM queue.model_calls
WHERE job_id = %(id)s
ORDER BY id;

-- name: dash_model_days
-- Model usage per UTC day, kind, backend and model in the %(days)s days before %(before)s
-- (NULL: up to today): queue.model_usage_daily's sums, with the live calls read through
-- model_calls_created for the window only (the view groups every call) and the pruned days
-- from the rollup.
WITH usage AS (
    SELECT (c.created_at AT TIME ZONE 'UTC')::date AS day, c.kind, c.backend, c.model,
           count(*) AS calls,
           count(*) FILTER (WHERE c.outcome = 'ok') AS ok_calls,
           count(*) FILTER (WHERE c.outcome = 'invalid') AS invalid_calls,
           count(*) FILTER (WHERE c.outcome = 'error') AS error_calls,
           coalesce(sum(c.prompt_tokens), 0) AS prompt_tokens,
           coalesce(sum(c.completion_tokens), 0) AS completion_tokens,
           sum(c.latency_ms) AS latency_ms, sum(c.gate_wait_ms) AS gate_wait_ms
    FROM queue.model_calls c
    WHERE c.created_at >= ((coalesce(%(before)s::date, (now() AT TIME ZONE 'UTC')::date + 1)
                            - %(days)s::int)::timestamp AT TIME ZONE 'UTC')
      AND c.created_at < (coalesce(%(before)s::date, (now() AT TIME ZONE 'UTC')::date + 1)
                          ::timestamp AT TIME ZONE 'UTC')
    GROUP BY 1, c.kind, c.backend, c.model
    UNION ALL
    SELECT r.day, r.kind, r.backend, r.model, r.calls, r.ok_calls, r.invalid_calls,
           r.error_calls, r.prompt_tokens, r.completion_tokens, r.latency_ms, r.gate_wait_ms
    FROM queue.model_usage_rollup r
    WHERE r.day >= coalesce(%(before)s::date, (now() AT TIME ZONE 'UTC')::date + 1)
                   - %(days)s::int
      AND r.day < coalesce(%(before)s::date, (now() AT TIME ZONE 'UTC')::date + 1)
)
SELECT day, kind, backend, model,
       sum(calls)::bigint AS calls, sum(ok_calls)::bigint AS ok_calls,
       sum(invalid_calls)::bigint AS invalid_calls, sum(error_calls)::bigint AS error_calls,
       sum(prompt_tokens)::bigint AS prompt_tokens,
       sum(completion_tokens)::bigint AS completion_tokens,
       (sum(prompt_tokens) + sum(completion_tokens))::bigint AS total_tokens,
       sum(latency_ms) / nullif(sum(calls), 0) AS avg_latency_ms,
       sum(gate_wait_ms) AS gate_wait_ms
FROM usage
GROUP BY day, kind, backend, model
ORDER BY day DESC, kind, backend, model;

-- name: dash_courses
-- Courses in id order after a cursor, with their live questions by explanation state.
SELECT c.id, c.title, s.*
FROM app.courses c
CROSS JOIN LATERAL (
    SELECT count(*)::bigint AS questions,
           count(*) FILTER (WHERE q.ai_explanation_status = 'none')::bigint AS st_none,
           count(*) FILTER (WHERE q.ai_explanation_status = 'pending')::bigint AS st_pending,
           count(*) FILTER (WHERE q.ai_explanation_status = 'ready')::bigint AS st_ready,
           count(*) FILTER (WHERE q.ai_explanation_status = 'stale')::bigint AS st_stale,
           count(*) FILTER (WHERE q.ai_explanation_status = 'failed')::bigint AS st_failed,
           count(*) FILTER (WHERE q.ai_explanation_status = 'skipped')::bigint AS st_skipped
    FROM app.questions q
    WHERE q.course_id = c.id AND q.deleted_at IS NULL
) s
WHERE c.id > coalesce(%(after)s::bigint, 0)
ORDER BY c.id
LIMIT %(limit)s;

-- name: dash_course
SELECT id, title, course_weakness_analysis AS analysis FROM app.courses WHERE id = %(id)s;

-- name: dash_course_history
-- The course's analyses, newest first (app.course_weakness_history).
SELECT * FROM app.course_weakness_history(%(id)s) ORDER BY entry DESC;

-- name: dash_course_questions
-- A course's live questions in id order after a cursor, of one explanation state (NULL: any).
SELECT id, left(question_text, 160) AS question_text, ai_explanation_status,
       ai_explanation_generated_at, embedding_status
FROM app.questions
WHERE course_id = %(course_id)s AND deleted_at IS NULL
  AND (%(status)s::text IS NULL OR ai_explanation_status = %(status)s::text)
  AND id > coalesce(%(after)s::bigint, 0)
ORDER BY id
LIMIT %(limit)s;

-- name: dash_question
SELECT q.id, q.course_id, c.title AS course_title, q.question_text, q.choice_1, q.choice_2,
       q.choice_3, q.choice_4, q.correct_choice, q.explanation, q.subject, q.scope,
       q.ai_explanation, q.ai_explanation_status, q.ai_explanation_generated_at,
       q.ai_explanation_model, q.embedding_status, q.deleted_at
FROM app.questions q
JOIN app.courses c ON c.id = q.course_id
WHERE q.id = %(id)s;

-- name: dash_question_jobs
-- The question's latest explanation jobs.
SELECT id, status, error_code, error_message, created_at, completed_at, result
FROM queue.jobs
WHERE kind = 'explanation' AND subject = 'question:' || %(id)s::bigint
ORDER BY id DESC
LIMIT 10;

-- name: dash_request_explanation
-- The application's manual trigger, as the dashboard's button.
SELECT status, job_id FROM app.request_explanation(%(question_id)s, %(regenerate)s);
