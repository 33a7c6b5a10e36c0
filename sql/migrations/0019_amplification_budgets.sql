-- Budgets an operator sets against amplification: one UPDATE that grades 2,000 quizzes of a
-- course used to enqueue 2,000 weakness analyses due at once, and one backfill call could
-- re-embed every row of the database. The budgets live in app.budgets and are changed with
-- plain SQL:
--   UPDATE app.budgets SET value = 50 WHERE name = 'weakness_analyses_per_course_per_hour';
-- Analyses past a course's hourly budget are not dropped: each is scheduled for a later
-- hour, so the model work per course and hour is bounded and every quiz is still analysed.

CREATE TABLE app.budgets (
    name  text    PRIMARY KEY,
    value integer NOT NULL CHECK (value >= 1),
    note  text    NOT NULL
);
INSERT INTO app.budgets (name, value, note) VALUES
    ('weakness_analyses_per_course_per_hour', 20,
     'weakness analyses of one course due in any one hour; more are scheduled for later hours'),
    ('backfill_rows_per_call', 10000,
     'rows app.backfill_embeddings enqueues per call; call it again for the rest');

CREATE FUNCTION app.budget(p_name text) RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT value FROM app.budgets WHERE name = p_name;
$$;
REVOKE EXECUTE ON FUNCTION app.budget(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION app.quizzes_enqueue_weakness_analysis() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_budget integer := app.budget('weakness_analyses_per_course_per_hour');
    v_queued integer;
BEGIN
    -- analyses of this course already due within the hour, or scheduled beyond it
    SELECT count(*) INTO v_queued FROM queue.jobs j
    WHERE j.kind = 'weakness_analysis' AND j.status = 'pending'
      AND j.payload->>'course_id' = NEW.course_id::text;
    PERFORM queue.enqueue('weakness_analysis', 'quiz:' || NEW.id,
                          jsonb_build_object('quiz_id', NEW.id, 'course_id', NEW.course_id),
                          p_run_at => now() + make_interval(hours => v_queued / v_budget));
    RETURN NULL;
END;
$$;

DROP FUNCTION app.backfill_embeddings(bigint, text);
CREATE FUNCTION app.backfill_embeddings(
    p_course_id bigint  DEFAULT NULL,
    p_model     text    DEFAULT NULL,
    p_limit     integer DEFAULT NULL
) RETURNS TABLE (job_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_limit integer := least(coalesce(p_limit, app.budget('backfill_rows_per_call')),
                             app.budget('backfill_rows_per_call'));
BEGIN
    RETURN QUERY
    WITH q AS (
        UPDATE app.questions x
        SET embedding_status = app.embedding_status_after_write(
                false, x.embedding_status, x.embedding IS NOT NULL)
        WHERE x.id IN (
            SELECT y.id FROM app.questions y
            WHERE y.deleted_at IS NULL
              AND (p_course_id IS NULL OR y.course_id = p_course_id)
              AND (y.embedding_status <> 'ready' OR y.embedding IS NULL
                   OR (p_model IS NOT NULL AND y.embedding_model IS DISTINCT FROM p_model))
            -- rows not yet queued first, so repeated calls make progress
            ORDER BY y.embedding_status = 'pending', y.id LIMIT v_limit)
        RETURNING x.id
    ), c AS (
        UPDATE app.document_chunks x
        SET embedding_status = app.embedding_status_after_write(
                false, x.embedding_status, x.embedding IS NOT NULL)
        WHERE x.id IN (
            SELECT y.id FROM app.document_chunks y
            JOIN app.documents d ON d.id = y.document_id
            WHERE d.deleted_at IS NULL
              AND (p_course_id IS NULL OR d.course_id = p_course_id)
              AND (y.embedding_status <> 'ready' OR y.embedding IS NULL
                   OR (p_model IS NOT NULL AND y.embedding_model IS DISTINCT FROM p_model))
            ORDER BY y.embedding_status = 'pending', y.id
            LIMIT v_limit - (SELECT count(*) FROM q))
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
REVOKE EXECUTE ON FUNCTION app.backfill_embeddings(bigint, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.backfill_embeddings(bigint, text, integer) TO llm_operator;
GRANT SELECT, UPDATE ON app.budgets TO llm_operator;
