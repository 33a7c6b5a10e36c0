-- Queries of `python -m worker eval explanations` (worker/evaluation/): the scratch database
-- it runs in, the labelled set loaded as an application would, and what the worker did.
-- The database DATABASE_URL names only issues CREATE/DROP DATABASE; nothing is written to it.

-- name: eval_create_database
-- One fixed name, so no SQL is composed at run time; CREATE fails while it exists, which also
-- keeps two evals on one server apart (a killed eval leaves it behind: drop it by hand).
CREATE DATABASE worker_eval;

-- name: eval_drop_database
DROP DATABASE IF EXISTS worker_eval WITH (FORCE);

-- name: eval_insert_user
INSERT INTO app.users (email, display_name) VALUES ('eval@localhost', 'worker eval')
RETURNING id;

-- name: eval_insert_question
INSERT INTO app.questions (course_id, question_type, question_text, choice_1, choice_2,
                           choice_3, choice_4, correct_choice, subject)
VALUES (%(course_id)s, 'multiple_choice', %(question_text)s, %(choice_1)s, %(choice_2)s,
        %(choice_3)s, %(choice_4)s, %(correct_choice)s, %(subject)s)
RETURNING id;

-- name: eval_pending
-- Jobs of a kind not finished yet (pending, running or waiting for a retry).
SELECT count(*)::int AS pending FROM queue.jobs WHERE kind = %(kind)s AND status = 'pending';

-- name: eval_request_explanation
-- The manual trigger the app's button calls: one job per question, at the manual priority.
SELECT job_id FROM app.request_explanation(%(question_id)s, true);

-- name: eval_explanations
-- Per question: its explanation job's end, the code each attempt ended with, what was
-- published, and every chat round trip its jobs made (the repair round and the blind
-- solve of verification mode included).
SELECT q.id AS question_id, q.ai_explanation AS text, q.ai_explanation_model AS model,
       j.status, j.error_code, j.error_message, j.result,
       coalesce(a.codes, '{}') AS attempt_codes,
       coalesce(m.calls, 0) AS calls, m.latency_ms, m.prompt_tokens, m.completion_tokens
FROM app.questions q
LEFT JOIN LATERAL (
    SELECT jj.id, jj.status, jj.error_code, jj.error_message, jj.result
    FROM queue.jobs jj
    WHERE jj.kind = 'explanation' AND jj.subject = 'question:' || q.id
    ORDER BY jj.id DESC LIMIT 1) j ON true
LEFT JOIN LATERAL (
    SELECT array_agg(coalesce(at.error_code, at.outcome) ORDER BY at.id) AS codes
    FROM queue.attempts at
    JOIN queue.jobs aj ON aj.id = at.job_id
    WHERE aj.kind = 'explanation' AND aj.subject = 'question:' || q.id) a ON true
LEFT JOIN LATERAL (
    SELECT count(*)::int AS calls, sum(mc.latency_ms)::float8 AS latency_ms,
           sum(mc.prompt_tokens)::int AS prompt_tokens,
           sum(mc.completion_tokens)::int AS completion_tokens
    FROM queue.model_calls mc
    JOIN queue.jobs mj ON mj.id = mc.job_id
    WHERE mj.kind = 'explanation' AND mj.subject = 'question:' || q.id
      AND mc.call = 'chat') m ON true
WHERE q.course_id = %(course_id)s
ORDER BY q.id;
