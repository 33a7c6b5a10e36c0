-- Queries of the demo (demo/__main__.py): loading the sample as an application would, and
-- reading back what the worker did.

-- name: insert_user
INSERT INTO app.users (email, display_name) VALUES (%(email)s, %(display_name)s) RETURNING id;

-- name: insert_question
INSERT INTO app.questions (course_id, question_type, question_text, choice_1, choice_2,
                           choice_3, choice_4, correct_choice, reference_answer, max_score,
                           explanation, subject, scope, exam_name, exam_round, source_note)
VALUES (%(course_id)s, %(question_type)s, %(question_text)s, %(choice_1)s, %(choice_2)s,
        %(choice_3)s, %(choice_4)s, %(correct_choice)s, %(reference_answer)s, %(max_score)s,
        %(explanation)s, %(subject)s, %(scope)s, %(exam_name)s, %(exam_round)s,
        %(source_note)s)
RETURNING id;

-- name: insert_quiz
INSERT INTO app.quizzes (course_id, user_id, kind, title, status)
VALUES (%(course_id)s, %(user_id)s, %(kind)s, %(title)s, 'submitted') RETURNING id;

-- name: insert_answer
INSERT INTO app.quiz_answers (quiz_id, question_id, selected_choice, answer_text, is_correct,
                              unsure, score, max_score)
VALUES (%(quiz_id)s, %(question_id)s, %(selected_choice)s, %(answer_text)s, %(is_correct)s,
        %(unsure)s, %(score)s, %(max_score)s);

-- name: grade
-- What the application does when grading is done; the triggers take it from here.
UPDATE app.quizzes SET status = 'graded', graded_at = now() WHERE id = %(quiz_id)s;

-- name: pending_jobs
SELECT count(*) FILTER (WHERE status = 'pending')::int AS pending,
       count(*) FILTER (WHERE status = 'pending' AND kind = %(kind)s)::int AS pending_kind,
       count(*)::int AS total
FROM queue.jobs;

-- name: outcomes
SELECT kind, status, coalesce(error_code, '') AS error_code, count(*)::int AS jobs
FROM queue.jobs GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

-- name: explanations
SELECT q.id, q.question_text, q.correct_choice, q.ai_explanation, q.ai_explanation_model,
       j.result->>'confidence' AS confidence
FROM app.questions q
JOIN queue.jobs j ON j.subject = 'question:' || q.id AND j.kind = 'explanation'
                  AND j.status = 'completed'
WHERE q.ai_explanation_status = 'ready'
ORDER BY q.id LIMIT 2;

-- name: guard_failures
SELECT j.subject, j.error_message FROM queue.jobs j
WHERE j.kind = 'explanation' AND j.error_code = 'guard_fail' ORDER BY j.id LIMIT 3;

-- name: analysis
SELECT course_weakness_analysis AS analysis FROM app.courses WHERE id = %(course_id)s;

-- name: similar
SELECT s.question_id, round(s.similarity::numeric, 3) AS similarity, s.question_text
FROM app.similar_questions(%(question_id)s, 3) s;

-- name: question_text
SELECT question_text FROM app.questions WHERE id = %(question_id)s;

-- name: usage
SELECT kind, model, sum(calls)::int AS calls, sum(prompt_tokens)::int AS prompt_tokens,
       sum(completion_tokens)::int AS completion_tokens,
       round((sum(latency_ms) / 1000)::numeric, 1) AS model_seconds
FROM queue.model_usage_daily GROUP BY kind, model ORDER BY kind;

-- name: drop_demo_database
DROP DATABASE IF EXISTS worker_demo WITH (FORCE);

-- name: create_demo_database
CREATE DATABASE worker_demo;
