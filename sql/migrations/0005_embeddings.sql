-- Question and document-chunk embeddings: triggers that enqueue them, the status machine,
-- the vector dimension, HNSW indexes, similarity search and duplicate detection.
--
-- The dimension is read from the `worker.embedding_dim` setting, which the migration runner
-- sets from WORKER_EMBED_DIM (bge-m3, the production default, has 1024).

DO $$
DECLARE
    v_dim integer := coalesce(nullif(current_setting('worker.embedding_dim', true), ''),
                              '1024')::integer;
BEGIN
    EXECUTE format('ALTER TABLE app.questions ALTER COLUMN embedding TYPE vector(%s)', v_dim);
    EXECUTE format('ALTER TABLE app.document_chunks ALTER COLUMN embedding TYPE vector(%s)',
                   v_dim);
END;
$$;

-- Cosine HNSW over live rows that have a vector (the seed's partial index).
CREATE INDEX questions_embedding_hnsw ON app.questions
    USING hnsw (embedding vector_cosine_ops)
    WHERE deleted_at IS NULL AND embedding IS NOT NULL;
CREATE INDEX document_chunks_embedding_hnsw ON app.document_chunks
    USING hnsw (embedding vector_cosine_ops)
    WHERE embedding IS NOT NULL;

-- The text embedded for a question: stem and choices, no subject or scope (a category name
-- is noise for semantic search). One definition, used by the worker and its stale check.
CREATE FUNCTION app.question_embedding_text(
    p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '문제: ' || coalesce(p_text, '')
        || CASE WHEN coalesce(p_c1, p_c2, p_c3, p_c4) IS NULL THEN ''
                ELSE E'\n보기:\n1. ' || coalesce(p_c1, '') || E'\n2. ' || coalesce(p_c2, '')
                  || E'\n3. ' || coalesce(p_c3, '') || E'\n4. ' || coalesce(p_c4, '')
           END;
$$;

-- A new live question needs a vector; an edit of the stem or a choice turns a ready vector
-- stale (it is kept until the new one lands) and re-embeds. Other columns never do.
-- The status a row's embedding takes when its text is written: a new row keeps a vector
-- it arrived with as `ready`, otherwise waits (`pending`); an edited row with a vector keeps
-- it as `stale` until the new one lands. One rule for questions, chunks and backfill.
CREATE FUNCTION app.embedding_status_after_write(
    p_inserted boolean, p_status text, p_has_vector boolean
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_inserted THEN CASE WHEN p_has_vector AND p_status = 'ready'
                                  THEN 'ready' ELSE 'pending' END
        WHEN p_status IN ('ready', 'stale') AND p_has_vector THEN 'stale'
        ELSE 'pending'
    END;
$$;

CREATE FUNCTION app.questions_embedding_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted_at IS NULL THEN
        NEW.embedding_status := app.embedding_status_after_write(
            TG_OP = 'INSERT', NEW.embedding_status, NEW.embedding IS NOT NULL);
    END IF;
    RETURN NEW;
END;
$$;

CREATE FUNCTION app.questions_enqueue_embedding() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted_at IS NULL AND NEW.embedding_status IN ('pending', 'stale') THEN
        PERFORM queue.enqueue('embedding', 'question:' || NEW.id,
                              jsonb_build_object('source', 'question', 'id', NEW.id));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER questions_embedding_on_insert BEFORE INSERT ON app.questions
    FOR EACH ROW EXECUTE FUNCTION app.questions_embedding_status();
CREATE TRIGGER questions_embedding_on_edit
    BEFORE UPDATE OF question_text, choice_1, choice_2, choice_3, choice_4 ON app.questions
    FOR EACH ROW
    WHEN (OLD.question_text IS DISTINCT FROM NEW.question_text
          OR OLD.choice_1 IS DISTINCT FROM NEW.choice_1
          OR OLD.choice_2 IS DISTINCT FROM NEW.choice_2
          OR OLD.choice_3 IS DISTINCT FROM NEW.choice_3
          OR OLD.choice_4 IS DISTINCT FROM NEW.choice_4)
    EXECUTE FUNCTION app.questions_embedding_status();
CREATE TRIGGER questions_embedding_enqueue_on_insert AFTER INSERT ON app.questions
    FOR EACH ROW EXECUTE FUNCTION app.questions_enqueue_embedding();
CREATE TRIGGER questions_embedding_enqueue_on_edit
    AFTER UPDATE OF question_text, choice_1, choice_2, choice_3, choice_4 ON app.questions
    FOR EACH ROW
    WHEN (OLD.question_text IS DISTINCT FROM NEW.question_text
          OR OLD.choice_1 IS DISTINCT FROM NEW.choice_1
          OR OLD.choice_2 IS DISTINCT FROM NEW.choice_2
          OR OLD.choice_3 IS DISTINCT FROM NEW.choice_3
          OR OLD.choice_4 IS DISTINCT FROM NEW.choice_4)
    EXECUTE FUNCTION app.questions_enqueue_embedding();

-- Document chunks: the same rules for `content`.
CREATE FUNCTION app.chunks_embedding_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.embedding_status := app.embedding_status_after_write(
        TG_OP = 'INSERT', NEW.embedding_status, NEW.embedding IS NOT NULL);
    RETURN NEW;
END;
$$;

CREATE FUNCTION app.chunks_enqueue_embedding() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.embedding_status IN ('pending', 'stale') THEN
        PERFORM queue.enqueue('embedding', 'chunk:' || NEW.id,
                              jsonb_build_object('source', 'chunk', 'id', NEW.id));
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER chunks_embedding_on_insert BEFORE INSERT ON app.document_chunks
    FOR EACH ROW EXECUTE FUNCTION app.chunks_embedding_status();
CREATE TRIGGER chunks_embedding_on_edit BEFORE UPDATE OF content ON app.document_chunks
    FOR EACH ROW WHEN (OLD.content IS DISTINCT FROM NEW.content)
    EXECUTE FUNCTION app.chunks_embedding_status();
CREATE TRIGGER chunks_embedding_enqueue_on_insert AFTER INSERT ON app.document_chunks
    FOR EACH ROW EXECUTE FUNCTION app.chunks_enqueue_embedding();
CREATE TRIGGER chunks_embedding_enqueue_on_edit AFTER UPDATE OF content ON app.document_chunks
    FOR EACH ROW WHEN (OLD.content IS DISTINCT FROM NEW.content)
    EXECUTE FUNCTION app.chunks_enqueue_embedding();

-- Enqueue every live row that lacks a current vector (and, given a model name, every row
-- embedded by another model). Idempotent: rows whose job is already active keep that job.
-- Returns the ids of the active jobs that cover them.
CREATE FUNCTION app.backfill_embeddings(
    p_course_id bigint DEFAULT NULL,
    p_model     text   DEFAULT NULL
) RETURNS TABLE (job_id bigint)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH q AS (
        UPDATE app.questions x
        SET embedding_status = app.embedding_status_after_write(
                false, x.embedding_status, x.embedding IS NOT NULL)
        WHERE x.deleted_at IS NULL
          AND (p_course_id IS NULL OR x.course_id = p_course_id)
          AND (x.embedding_status <> 'ready' OR x.embedding IS NULL
               OR (p_model IS NOT NULL AND x.embedding_model IS DISTINCT FROM p_model))
        RETURNING x.id
    ), c AS (
        UPDATE app.document_chunks x
        SET embedding_status = app.embedding_status_after_write(
                false, x.embedding_status, x.embedding IS NOT NULL)
        FROM app.documents d
        WHERE d.id = x.document_id AND d.deleted_at IS NULL
          AND (p_course_id IS NULL OR d.course_id = p_course_id)
          AND (x.embedding_status <> 'ready' OR x.embedding IS NULL
               OR (p_model IS NOT NULL AND x.embedding_model IS DISTINCT FROM p_model))
        RETURNING x.id
    )
    SELECT queue.enqueue('embedding', 'question:' || q.id,
                         jsonb_build_object('source', 'question', 'id', q.id))
    FROM q
    UNION ALL
    SELECT queue.enqueue('embedding', 'chunk:' || c.id,
                         jsonb_build_object('source', 'chunk', 'id', c.id))
    FROM c;
END;
$$;

-- The k live questions of the same course nearest to a question (cosine), never itself.
CREATE FUNCTION app.similar_questions(p_question_id bigint, p_k integer DEFAULT 5)
RETURNS TABLE (question_id bigint, similarity double precision, question_text text)
LANGUAGE plpgsql STABLE
-- keep scanning the HNSW index past rows of other courses until k are found
SET hnsw.iterative_scan = 'strict_order'
AS $$
DECLARE
    v_course    bigint;
    v_embedding vector;
BEGIN
    SELECT x.course_id, x.embedding INTO v_course, v_embedding
    FROM app.questions x WHERE x.id = p_question_id;
    IF v_embedding IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT x.id, 1 - (x.embedding <=> v_embedding), x.question_text
    FROM app.questions x
    WHERE x.deleted_at IS NULL AND x.embedding IS NOT NULL
      AND x.course_id = v_course AND x.id <> p_question_id AND x.is_active
    ORDER BY x.embedding <=> v_embedding
    LIMIT p_k;
END;
$$;

-- Likely duplicates of a question: same course, cosine similarity at or above a threshold.
-- A new question is embedded automatically, so this answers as soon as its vector is ready.
CREATE FUNCTION app.duplicate_questions(p_question_id bigint, p_threshold double precision
                                        DEFAULT 0.95)
RETURNS TABLE (question_id bigint, similarity double precision, question_text text)
LANGUAGE sql STABLE AS $$
    SELECT s.question_id, s.similarity, s.question_text
    FROM app.similar_questions(p_question_id, 20) s
    WHERE s.similarity >= p_threshold;
$$;

-- What the worker reads and writes for embeddings, and nothing more.
GRANT SELECT (id, course_id, question_text, choice_1, choice_2, choice_3, choice_4,
              deleted_at, is_active, embedding, embedding_status)
    ON app.questions TO llm_worker;
GRANT UPDATE (embedding, embedding_status, embedding_updated_at, embedding_model)
    ON app.questions TO llm_worker;
GRANT SELECT (id, document_id, content, embedding, embedding_status)
    ON app.document_chunks TO llm_worker;
GRANT UPDATE (embedding, embedding_status, embedding_updated_at, embedding_model)
    ON app.document_chunks TO llm_worker;
GRANT SELECT (id, course_id, deleted_at) ON app.documents TO llm_worker;
