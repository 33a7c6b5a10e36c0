-- Queries of the weakness analysis job kind (worker/kinds/weakness.py).

-- name: weakness_quiz
-- The quiz, its course (NULL columns when the course is gone) and how many answers it has.
-- The course's analysis is read here without a lock: it only feeds the prompt's summary.
-- It is read as text and decoded by the worker (weakness_store.read_stored), which bounds
-- what it accepts.
SELECT z.id, z.course_id, z.kind, z.title, z.status,
       c.id AS course_found, c.title AS course_title,
       c.course_weakness_analysis::text AS existing,
       (SELECT count(*) FROM app.quiz_answers a WHERE a.quiz_id = z.id)::int AS answers,
       app.quiz_grading_md5(z.id) AS grading_md5
FROM app.quizzes z
LEFT JOIN app.courses c ON c.id = z.course_id
WHERE z.id = %(quiz_id)s;

-- name: weakness_wrong_answers
-- Only the wrong answers of one quiz (app.answer_is_wrong), in answer order, with what the
-- prompt needs about each question; `deleted` ones are left out by the worker.
SELECT a.id AS answer_id, x.id AS question_id, x.question_type, x.question_text,
       x.choice_1, x.choice_2, x.choice_3, x.choice_4, x.correct_choice,
       x.reference_answer, x.explanation, x.subject, x.scope,
       a.selected_choice, a.answer_text, a.unsure, a.score,
       coalesce(a.max_score, x.max_score) AS max_score,
       (x.deleted_at IS NOT NULL) AS deleted
FROM app.quiz_answers a
JOIN app.questions x ON x.id = a.question_id
WHERE a.quiz_id = %(quiz_id)s
  AND app.answer_is_wrong(x.question_type, a.is_correct, a.selected_choice, x.correct_choice,
                          a.score, coalesce(a.max_score, x.max_score))
ORDER BY a.id;

-- name: weakness_grading
-- Right before the merge: the grading the analysis was made from must still be the grading.
SELECT app.quiz_grading_md5(%(quiz_id)s) AS grading_md5;

-- name: weakness_lock_course
-- Right before the merge, in the claiming transaction: a concurrent analysis of the same
-- course waits here until the other one commits, then reads what it wrote (READ COMMITTED
-- re-reads a row locked FOR NO KEY UPDATE after the wait), so neither analysis is lost.
-- NO KEY: the merge changes no key, and the application's foreign-key checks take FOR KEY
-- SHARE on the course (any transaction that inserts a quiz, or updates one twice) — a
-- FOR UPDATE would wait for each of them to commit.
SELECT id, course_weakness_analysis::text AS existing
FROM app.courses
WHERE id = %(course_id)s
FOR NO KEY UPDATE;

-- name: weakness_store
UPDATE app.courses
SET course_weakness_analysis = %(analysis)s,
    updated_at = now()
WHERE id = %(course_id)s;
