-- Queries of bench/triggers.py (scenario 4: what the triggers cost the application's writes).

-- name: seed
-- Seeded with triggers off (session_replication_role = replica), as if the rows had long
-- been embedded: every question has a vector and status ready, and the queue holds only
-- finished jobs.
-- Quizzes 1..%(quizzes)s answer every question right; the next %(quizzes)s get three wrong
-- answers each, on questions of their own, so every grading has explanations to prefetch.
SET session_replication_role = replica;
INSERT INTO app.users (email, display_name) VALUES ('bench@example.com', 'bench');
INSERT INTO app.courses (user_id, title)
SELECT 1, '과목 ' || c FROM generate_series(1, 10) AS c;
INSERT INTO app.questions (course_id, question_text, choice_1, choice_2, choice_3, choice_4,
                           correct_choice, explanation, subject, scope, embedding,
                           embedding_status, embedding_updated_at, embedding_model)
SELECT 1 + q %% 10,
       '문제 ' || q || ': 다음 중 데이터베이스 트랜잭션의 성질로 옳지 않은 것은? (' || md5(q::text) || ')',
       '원자성 ' || q, '일관성 ' || q, '고립성 ' || q, '지속성 ' || q,
       1 + q %% 4, '해설 ' || q, '과목 ' || (q %% 7), '범위 ' || (q %% 5),
       (SELECT array_agg(random())::vector FROM generate_series(1, %(dim)s) WHERE q > 0),
       'ready', now(), 'bench-model'
FROM generate_series(1, %(questions)s) AS q;
INSERT INTO app.quizzes (course_id, user_id, title, status)
SELECT 1 + z %% 10, 1, 'quiz ' || z, 'submitted' FROM generate_series(1, 2 * %(quizzes)s) AS z;
-- ten answers per quiz; in the second half three of them wrong, on questions 3k+1..3k+3
INSERT INTO app.quiz_answers (quiz_id, question_id, selected_choice, is_correct)
SELECT z, 1 + ((z * 37 + a * 101) %% %(questions)s), 1, true
FROM generate_series(1, 2 * %(quizzes)s) AS z, generate_series(1, 10) AS a
WHERE z <= %(quizzes)s OR a > 3
ON CONFLICT DO NOTHING;
INSERT INTO app.quiz_answers (quiz_id, question_id, selected_choice, is_correct)
SELECT z, 1 + (3 * (z - %(quizzes)s - 1) + a - 1) %% %(questions)s, 2, false
FROM generate_series(%(quizzes)s + 1, 2 * %(quizzes)s) AS z, generate_series(1, 3) AS a
ON CONFLICT (quiz_id, question_id) DO UPDATE SET is_correct = false, selected_choice = 2;
-- a queue with history, as in production (finished jobs stay): three per question
INSERT INTO queue.jobs (kind, subject, payload, status, attempts, started_at, completed_at)
SELECT (ARRAY['embedding', 'explanation', 'weakness_analysis'])[1 + g %% 3],
       'question:' || (1 + g %% %(questions)s), '{}', 'completed', 1, now(), now()
FROM generate_series(1, 3 * %(questions)s) AS g;
SET session_replication_role = origin;

-- name: reset
-- Back to the seeded state between runs, with triggers off.
SET session_replication_role = replica;
DELETE FROM queue.jobs WHERE status = 'pending';
UPDATE app.questions SET embedding_status = 'ready'
WHERE embedding_status <> 'ready';
UPDATE app.questions SET ai_explanation_status = 'none'
WHERE ai_explanation_status <> 'none';
UPDATE app.quizzes SET status = 'submitted', graded_at = NULL WHERE status <> 'submitted';
SET session_replication_role = origin;

-- name: vacuum
VACUUM ANALYZE app.questions, app.quizzes, app.quiz_answers, queue.jobs, queue.attempts;

-- name: checkpoint
CHECKPOINT;

-- name: enable_triggers
ALTER TABLE app.questions ENABLE TRIGGER USER;
ALTER TABLE app.quizzes ENABLE TRIGGER USER;

-- name: disable_triggers
ALTER TABLE app.questions DISABLE TRIGGER USER;
ALTER TABLE app.quizzes DISABLE TRIGGER USER;

-- name: triggers
SELECT c.relname AS "table", t.tgname AS "trigger"
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'app' AND c.relname IN ('questions', 'quizzes') AND NOT t.tgisinternal
ORDER BY 1, 2;

-- name: jobs_by_kind
SELECT kind, count(*)::int AS jobs FROM queue.jobs WHERE status = 'pending'
GROUP BY kind ORDER BY kind;
