-- Queries of the embedding job kind (worker/kinds/embedding.py).

-- name: embedding_inputs
-- The text to embed for each question and chunk of a batch, its fingerprint (computed by the
-- server, over the bytes it stores, as the write-back's check computes it, whatever the
-- database's encoding), and whether its row is gone.
SELECT 'question' AS source, x.id, t.text, md5(t.text) AS text_md5,
       (x.deleted_at IS NOT NULL) AS deleted
FROM app.questions x,
     LATERAL (SELECT app.question_embedding_text(x.question_text, x.choice_1, x.choice_2,
                                                 x.choice_3, x.choice_4) AS text) t
WHERE x.id = ANY(%(question_ids)s::bigint[])
UNION ALL
SELECT 'chunk', c.id, c.content, md5(c.content), (d.deleted_at IS NOT NULL)
FROM app.document_chunks c
JOIN app.documents d ON d.id = c.document_id
WHERE c.id = ANY(%(chunk_ids)s::bigint[]);

-- name: write_question_embedding
-- Only if the question still reads as the text that was embedded (the row is locked by the
-- UPDATE, so an edit cannot slip in between the check and the write).
UPDATE app.questions x
SET embedding = %(embedding)s::vector,
    embedding_status = 'ready',
    embedding_updated_at = now(),
    embedding_model = %(model)s
WHERE x.id = %(id)s
  AND x.deleted_at IS NULL
  AND md5(app.question_embedding_text(x.question_text, x.choice_1, x.choice_2, x.choice_3,
                                      x.choice_4)) = %(text_md5)s
RETURNING x.id;

-- name: write_chunk_embedding
UPDATE app.document_chunks c
SET embedding = %(embedding)s::vector,
    embedding_status = 'ready',
    embedding_updated_at = now(),
    embedding_model = %(model)s
FROM app.documents d
WHERE c.id = %(id)s AND d.id = c.document_id AND d.deleted_at IS NULL
  AND md5(c.content) = %(text_md5)s
RETURNING c.id;

-- name: mark_question_embedding_failed
-- The previous vector, if any, is kept; only the status says the last try failed.
UPDATE app.questions
SET embedding_status = 'failed'
WHERE id = %(id)s AND embedding_status IN ('pending', 'stale');

-- name: mark_chunk_embedding_failed
UPDATE app.document_chunks
SET embedding_status = 'failed'
WHERE id = %(id)s AND embedding_status IN ('pending', 'stale');

-- name: backfill_embeddings
SELECT job_id FROM app.backfill_embeddings(%(course_id)s, %(model)s);

-- name: active_among
SELECT count(*)::int AS active FROM queue.jobs
WHERE id = ANY(%(job_ids)s::bigint[]) AND status = 'pending';

-- name: finished_not_completed
SELECT status, error_code, count(*)::int AS jobs FROM queue.jobs
WHERE id = ANY(%(job_ids)s::bigint[]) AND status NOT IN ('pending', 'completed')
GROUP BY status, error_code ORDER BY jobs DESC;
