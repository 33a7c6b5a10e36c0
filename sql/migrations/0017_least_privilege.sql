-- Least privilege for the application, the worker and the operator.
--
-- The application's role, `llm_app` (no login; log in as a member of it), writes the app
-- tables and calls the app's request functions, and holds nothing in the queue: the
-- triggers and request functions that enqueue run with their owner's rights (SECURITY
-- DEFINER, with a search path that no caller can bend), so a write to a question enqueues
-- its embedding without the writer holding any right on queue.jobs. No function is
-- executable by PUBLIC; each role is granted the ones it calls. `llm_operator` reads the
-- queue and requeues, cancels and backfills through the operator functions; those run with
-- the operator's own rights (row locks and row-level security apply to it), so it holds the
-- job columns they write. Priority and max_attempts are bounded, so no caller can jump
-- every queue or make a job retry for ever.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'llm_app') THEN
        CREATE ROLE llm_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'llm_operator') THEN
        CREATE ROLE llm_operator NOLOGIN;
    END IF;
END;
$$;

-- A function listed by name (every overload) gets `action`, formatted with its signature.
CREATE FUNCTION queue.for_functions(p_names text[], p_action text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_function regprocedure;
    v_found integer := 0;
BEGIN
    FOR v_function IN
        SELECT p.oid::regprocedure FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname || '.' || p.proname = ANY (p_names)
    LOOP
        EXECUTE format(p_action, v_function);
        v_found := v_found + 1;
    END LOOP;
    IF v_found < cardinality(p_names) THEN
        RAISE EXCEPTION 'for_functions: % names, % functions found', cardinality(p_names), v_found;
    END IF;
END;
$$;

-- what enqueues on the application's behalf runs with the owner's rights
SELECT queue.for_functions(ARRAY[
    'app.questions_enqueue_embedding', 'app.chunks_enqueue_embedding',
    'app.quizzes_enqueue_weakness_analysis', 'app.quizzes_prefetch_explanations',
    'app.prefetch_explanations', 'app.request_explanation', 'app.request_weakness_analysis',
    'app.explanation_gave_up', 'queue.notify_new_jobs', 'queue.is_running',
    'app.backfill_embeddings'],
    'ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, pg_temp');

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA queue, app FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA queue, app REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- pure helpers the worker's queries and the app's own triggers use
SELECT queue.for_functions(ARRAY[
    'app.question_content_md5', 'app.question_embedding_text', 'app.answer_is_wrong',
    'app.quiz_grading_md5', 'app.embedding_status_after_write'],
    'GRANT EXECUTE ON FUNCTION %s TO llm_worker, llm_app');

-- the worker: its liveness, the rerun requests, the ownership fence, the kinds' sweeps
SELECT queue.for_functions(ARRAY[
    'queue.worker_alive', 'queue.worker_stopped', 'queue.apply_reruns', 'queue.claim_lost',
    'queue.fail_unknown_kinds', 'app.explanation_jobs_failed', 'app.embedding_jobs_failed'],
    'GRANT EXECUTE ON FUNCTION %s TO llm_worker');

-- the application: its tables, its request functions and searches, nothing in queue
GRANT USAGE ON SCHEMA app TO llm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA app TO llm_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA app TO llm_app;
SELECT queue.for_functions(ARRAY[
    'app.request_explanation', 'app.request_weakness_analysis', 'app.similar_questions',
    'app.duplicate_questions', 'app.course_weakness_history'],
    'GRANT EXECUTE ON FUNCTION %s TO llm_app');

-- the operator: what the queue holds, and the operator functions with what they write
GRANT USAGE ON SCHEMA queue, app TO llm_operator;
GRANT SELECT ON ALL TABLES IN SCHEMA queue TO llm_operator;
GRANT INSERT, UPDATE ON queue.jobs TO llm_operator;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA queue TO llm_operator;
SELECT queue.for_functions(ARRAY[
    'queue.requeue', 'queue.requeue_job', 'queue.requeue_failed', 'queue.cancel',
    'queue.is_running', 'app.backfill_embeddings', 'app.course_weakness_history'],
    'GRANT EXECUTE ON FUNCTION %s TO llm_operator');

DROP FUNCTION queue.for_functions(text[], text);

ALTER TABLE queue.jobs ADD CONSTRAINT priority_bounded CHECK (priority BETWEEN -100 AND 100)
    NOT VALID;
ALTER TABLE queue.jobs ADD CONSTRAINT max_attempts_bounded CHECK (max_attempts <= 25)
    NOT VALID;
