-- Queries of the explanation job kind (worker/kinds/explanation.py, evidence.py).

-- name: explanation_question
SELECT q.id, q.course_id, q.question_type, q.question_text,
       q.choice_1, q.choice_2, q.choice_3, q.choice_4, q.correct_choice,
       q.deleted_at IS NOT NULL AS deleted,
       q.ai_explanation_status, q.ai_explanation IS NOT NULL AS has_text,
       app.question_content_md5(q.question_text, q.choice_1, q.choice_2, q.choice_3,
                                q.choice_4, q.correct_choice) AS content_md5,
       app.question_embedding_text(q.question_text, q.choice_1, q.choice_2, q.choice_3,
                                   q.choice_4) AS embedding_text,
       CASE WHEN q.embedding_status = 'ready' THEN q.embedding END AS embedding
FROM app.questions q
WHERE q.id = %(id)s;

-- name: evidence_chunks
-- Candidates for reranking: the course's chunks nearest to the question.
SELECT c.id, d.id AS document_id, d.title, c.content,
       1 - (c.embedding <=> %(embedding)s::vector) AS similarity
FROM app.document_chunks c
JOIN app.documents d ON d.id = c.document_id
WHERE d.course_id = %(course_id)s AND d.deleted_at IS NULL AND c.embedding IS NOT NULL
ORDER BY c.embedding <=> %(embedding)s::vector
LIMIT %(limit)s;

-- name: evidence_summaries
-- The course's document summaries, each ranked by its nearest chunk (documents without an
-- embedded chunk come last).
SELECT d.id, d.title, d.ai_summary,
       coalesce(max(1 - (c.embedding <=> %(embedding)s::vector)), 0) AS similarity
FROM app.documents d
LEFT JOIN app.document_chunks c ON c.document_id = d.id AND c.embedding IS NOT NULL
WHERE d.course_id = %(course_id)s AND d.deleted_at IS NULL
  AND nullif(btrim(d.ai_summary), '') IS NOT NULL
GROUP BY d.id
ORDER BY similarity DESC, d.id
LIMIT %(limit)s;

-- name: evidence_questions
-- Other questions of the course with a ready explanation: never the question itself, never
-- an explanation that is not ready (no explanations built on unchecked ones).
SELECT q.id, q.question_text, q.choice_1, q.choice_2, q.choice_3, q.choice_4,
       q.correct_choice, q.ai_explanation,
       1 - (q.embedding <=> %(embedding)s::vector) AS similarity
FROM app.questions q
WHERE q.course_id = %(course_id)s AND q.id <> %(id)s AND q.deleted_at IS NULL
  AND q.ai_explanation_status = 'ready' AND q.ai_explanation IS NOT NULL
  AND q.embedding IS NOT NULL
ORDER BY q.embedding <=> %(embedding)s::vector
LIMIT %(limit)s;

-- name: lock_question_for_explanation
-- Taken right before the write: the content the model saw must still be the content.
SELECT q.deleted_at IS NOT NULL AS deleted, q.correct_choice,
       app.question_content_md5(q.question_text, q.choice_1, q.choice_2, q.choice_3,
                                q.choice_4, q.correct_choice) AS content_md5
FROM app.questions q
WHERE q.id = %(id)s
FOR NO KEY UPDATE;

-- name: write_explanation
UPDATE app.questions
SET ai_explanation = %(text)s,
    ai_explanation_status = 'ready',
    ai_explanation_generated_at = now(),
    ai_explanation_model = %(model)s
WHERE id = %(id)s;

-- name: mark_explanation
-- A job that ended without an explanation: `failed` keeps the previous text; `skipped`
-- means there was nothing to ground one in. Only a question still waiting is changed.
UPDATE app.questions
SET ai_explanation_status = %(status)s
WHERE id = %(id)s AND ai_explanation_status = 'pending';
