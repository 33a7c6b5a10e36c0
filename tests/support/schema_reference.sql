-- pg_dump --schema-only of a freshly migrated database, PostgreSQL 18.
-- Written by `REGENERATE_SCHEMA=1 pytest tests/integration/test_migrate.py`.

--
-- PostgreSQL database dump
--



SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: app; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA app;


--
-- Name: queue; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA queue;


--
-- Name: vector; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;


--
-- Name: EXTENSION vector; Type: COMMENT; Schema: -; Owner: -
--

COMMENT ON EXTENSION vector IS 'vector data type and ivfflat and hnsw access methods';


--
-- Name: answer_is_wrong(text, boolean, smallint, smallint, numeric, numeric); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.answer_is_wrong(p_question_type text, p_is_correct boolean, p_selected_choice smallint, p_correct_choice smallint, p_score numeric, p_max_score numeric) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN p_question_type = 'descriptive' THEN
            CASE WHEN p_score IS NOT NULL AND p_max_score IS NOT NULL
                 THEN p_score < p_max_score
                 ELSE p_is_correct IS FALSE END
        ELSE
            CASE WHEN p_is_correct IS NOT NULL
                 THEN NOT p_is_correct
                 ELSE p_correct_choice IS NOT NULL
                      AND p_selected_choice IS DISTINCT FROM p_correct_choice END
    END;
$$;


--
-- Name: backfill_embeddings(bigint, text, integer); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.backfill_embeddings(p_course_id bigint DEFAULT NULL::bigint, p_model text DEFAULT NULL::text, p_limit integer DEFAULT NULL::integer) RETURNS TABLE(job_id bigint)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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


--
-- Name: budget(text); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.budget(p_name text) RETURNS integer
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT value FROM app.budgets WHERE name = p_name;
$$;


--
-- Name: chunks_embedding_status(); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.chunks_embedding_status() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.embedding_status := app.embedding_status_after_write(
        TG_OP = 'INSERT', NEW.embedding_status, NEW.embedding IS NOT NULL);
    RETURN NEW;
END;
$$;


--
-- Name: chunks_enqueue_embedding(); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.chunks_enqueue_embedding() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    IF NEW.embedding_status IN ('pending', 'stale') THEN
        PERFORM queue.enqueue('embedding', 'chunk:' || NEW.id,
                              jsonb_build_object('source', 'chunk', 'id', NEW.id));
    END IF;
    RETURN NULL;
END;
$$;


--
-- Name: course_weakness_history(bigint); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.course_weakness_history(p_course_id bigint) RETURNS TABLE(entry integer, source text, quiz_id bigint, job_id bigint, analyzed_at text, prompt_version integer, model text, wrong_answers integer, weaknesses jsonb, suggestions jsonb, superseded_by_job bigint)
    LANGUAGE sql STABLE
    AS $$
    SELECT h.ord::integer,
           h.e ->> 'source',
           (h.e ->> 'quiz_id')::bigint,
           (h.e ->> 'job_id')::bigint,
           h.e ->> 'analyzed_at',
           (h.e ->> 'prompt_version')::integer,
           h.e ->> 'model',
           (h.e ->> 'wrong_answers')::integer,
           h.e -> 'weaknesses',
           h.e -> 'suggestions',
           (h.e ->> 'superseded_by_job')::bigint
    FROM app.courses c
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(c.course_weakness_analysis -> 'history') = 'array'
             THEN c.course_weakness_analysis -> 'history' ELSE '[]'::jsonb END
    ) WITH ORDINALITY AS h(e, ord)
    WHERE c.id = p_course_id
    ORDER BY h.ord;
$$;


--
-- Name: duplicate_questions(bigint, double precision); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.duplicate_questions(p_question_id bigint, p_threshold double precision DEFAULT 0.95) RETURNS TABLE(question_id bigint, similarity double precision, question_text text)
    LANGUAGE sql STABLE
    AS $$
    SELECT s.question_id, s.similarity, s.question_text
    FROM app.similar_questions(p_question_id, 20) s
    WHERE s.similarity >= p_threshold;
$$;


--
-- Name: embedding_jobs_failed(bigint[]); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.embedding_jobs_failed(p_job_ids bigint[]) RETURNS void
    LANGUAGE sql
    AS $_$
    UPDATE app.questions x
    SET embedding_status = 'failed'
    FROM queue.jobs j
    WHERE j.id = ANY(p_job_ids) AND j.payload ->> 'source' = 'question'
      AND x.id = CASE WHEN j.payload ->> 'id' ~ '^[0-9]{1,18}$'
                      THEN (j.payload ->> 'id')::bigint END
      AND x.embedding_status IN ('pending', 'stale');
    UPDATE app.document_chunks c
    SET embedding_status = 'failed'
    FROM queue.jobs j
    WHERE j.id = ANY(p_job_ids) AND j.payload ->> 'source' = 'chunk'
      AND c.id = CASE WHEN j.payload ->> 'id' ~ '^[0-9]{1,18}$'
                      THEN (j.payload ->> 'id')::bigint END
      AND c.embedding_status IN ('pending', 'stale');
$_$;


--
-- Name: embedding_status_after_write(boolean, text, boolean); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.embedding_status_after_write(p_inserted boolean, p_status text, p_has_vector boolean) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE
        WHEN p_inserted THEN CASE WHEN p_has_vector AND p_status = 'ready'
                                  THEN 'ready' ELSE 'pending' END
        WHEN p_status IN ('ready', 'stale') AND p_has_vector THEN 'stale'
        ELSE 'pending'
    END;
$$;


--
-- Name: explanation_gave_up(bigint); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.explanation_gave_up(p_question_id bigint) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT coalesce((
        SELECT j.error_code IN ('guard_fail', 'evidence_missing')
        FROM queue.jobs j
        WHERE j.kind = 'explanation' AND j.subject = 'question:' || p_question_id
        ORDER BY j.id DESC
        LIMIT 1), false);
$$;


--
-- Name: explanation_jobs_failed(bigint[]); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.explanation_jobs_failed(p_job_ids bigint[]) RETURNS void
    LANGUAGE sql
    AS $_$
    UPDATE app.questions x
    SET ai_explanation_status = 'failed'
    FROM queue.jobs j
    WHERE j.id = ANY(p_job_ids)
      AND x.id = CASE WHEN j.payload ->> 'question_id' ~ '^[0-9]{1,18}$'
                      THEN (j.payload ->> 'question_id')::bigint END
      AND x.ai_explanation_status = 'pending';
$_$;


--
-- Name: prefetch_explanations(bigint, integer); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.prefetch_explanations(p_quiz_id bigint, p_limit integer DEFAULT 30) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_count integer := 0;
    v_qid   bigint;
BEGIN
    FOR v_qid IN
        SELECT q.id
        FROM app.quiz_answers a
        JOIN app.questions q ON q.id = a.question_id
        WHERE a.quiz_id = p_quiz_id
          AND (a.is_correct IS FALSE OR a.unsure)
          AND q.question_type = 'multiple_choice'
          AND q.deleted_at IS NULL
          AND (q.ai_explanation_status IN ('none', 'failed') OR q.ai_explanation IS NULL)
          AND q.ai_explanation_status <> 'pending'
          AND NOT app.explanation_gave_up(q.id)
        -- wrong answers before merely unsure ones, then in the quiz's order
        ORDER BY (a.is_correct IS FALSE) DESC, a.id
        LIMIT p_limit
    LOOP
        UPDATE app.questions SET ai_explanation_status = 'pending' WHERE id = v_qid;
        PERFORM queue.enqueue('explanation', 'question:' || v_qid,
                              jsonb_build_object('question_id', v_qid, 'source', 'prefetch',
                                                 'quiz_id', p_quiz_id));
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END;
$$;


--
-- Name: question_content_md5(text, text, text, text, text, smallint); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.question_content_md5(p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text, p_key smallint) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT md5(jsonb_build_array(p_text, p_c1, p_c2, p_c3, p_c4, p_key)::text);
$$;


--
-- Name: question_embedding_text(text, text, text, text, text); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.question_embedding_text(p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT '문제: ' || coalesce(p_text, '')
        || CASE WHEN coalesce(p_c1, p_c2, p_c3, p_c4) IS NULL THEN ''
                ELSE E'\n보기:\n1. ' || coalesce(p_c1, '') || E'\n2. ' || coalesce(p_c2, '')
                  || E'\n3. ' || coalesce(p_c3, '') || E'\n4. ' || coalesce(p_c4, '')
           END;
$$;


--
-- Name: questions_embedding_status(); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.questions_embedding_status() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.deleted_at IS NULL THEN
        NEW.embedding_status := app.embedding_status_after_write(
            TG_OP = 'INSERT', NEW.embedding_status, NEW.embedding IS NOT NULL);
    END IF;
    RETURN NEW;
END;
$$;


--
-- Name: questions_enqueue_embedding(); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.questions_enqueue_embedding() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    IF NEW.deleted_at IS NULL AND NEW.embedding_status IN ('pending', 'stale') THEN
        PERFORM queue.enqueue('embedding', 'question:' || NEW.id,
                              jsonb_build_object('source', 'question', 'id', NEW.id));
    END IF;
    RETURN NULL;
END;
$$;


--
-- Name: questions_explanation_stale(); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.questions_explanation_stale() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.ai_explanation_status = 'ready' THEN
        NEW.ai_explanation_status := 'stale';
    END IF;
    RETURN NEW;
END;
$$;


--
-- Name: quiz_grading_md5(bigint); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.quiz_grading_md5(p_quiz_id bigint) RETURNS text
    LANGUAGE sql STABLE
    AS $$
    SELECT md5(coalesce(jsonb_agg(jsonb_build_array(
                   a.id, a.question_id, a.selected_choice, a.answer_text, a.is_correct,
                   a.unsure, a.score, a.max_score) ORDER BY a.id), '[]'::jsonb)::text)
    FROM app.quiz_answers a
    WHERE a.quiz_id = p_quiz_id;
$$;


--
-- Name: quizzes_enqueue_weakness_analysis(); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.quizzes_enqueue_weakness_analysis() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
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


--
-- Name: quizzes_prefetch_explanations(); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.quizzes_prefetch_explanations() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    BEGIN
        PERFORM app.prefetch_explanations(NEW.id);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'explanation prefetch for quiz % failed: %', NEW.id, SQLERRM;
    END;
    RETURN NULL;
END;
$$;


--
-- Name: request_explanation(bigint, boolean); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.request_explanation(p_question_id bigint, p_regenerate boolean DEFAULT false) RETURNS TABLE(status text, explanation text, is_stale boolean, job_id bigint)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_q      app.questions;
    v_active bigint;
    v_queued bigint;
BEGIN
    SELECT * INTO v_q FROM app.questions x WHERE x.id = p_question_id FOR NO KEY UPDATE;
    IF NOT FOUND OR v_q.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'question % does not exist', p_question_id
            USING ERRCODE = 'no_data_found';
    END IF;
    IF v_q.question_type <> 'multiple_choice' THEN
        RAISE EXCEPTION 'question % is not a multiple-choice question', p_question_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT j.id INTO v_active FROM queue.jobs j
    WHERE j.kind = 'explanation' AND j.subject = 'question:' || p_question_id
      AND j.status IN ('pending', 'running');
    IF v_q.ai_explanation_status = 'pending' AND v_active IS NOT NULL THEN
        SELECT j.id INTO v_queued FROM queue.jobs j
        WHERE j.id = v_active AND j.status = 'pending'
        FOR NO KEY UPDATE SKIP LOCKED;
        IF v_queued IS NULL OR queue.is_running(v_queued) THEN
            RAISE EXCEPTION 'an explanation of question % is being generated', p_question_id
                USING ERRCODE = 'object_in_use', HINT = 'ask again when it is ready';
        END IF;
        UPDATE queue.jobs j
        SET priority = greatest(j.priority, 10::smallint), run_at = least(j.run_at, now()),
            updated_at = now()
        WHERE j.id = v_queued;
        PERFORM pg_notify('queue_jobs', 'explanation');
        RETURN QUERY SELECT 'pending'::text, v_q.ai_explanation, false, v_queued;
        RETURN;
    END IF;

    IF v_q.ai_explanation_status IN ('ready', 'stale') AND v_q.ai_explanation IS NOT NULL
       AND NOT p_regenerate THEN
        RETURN QUERY SELECT v_q.ai_explanation_status, v_q.ai_explanation,
                            v_q.ai_explanation_status = 'stale', NULL::bigint;
        RETURN;
    END IF;

    UPDATE app.questions x SET ai_explanation_status = 'pending' WHERE x.id = p_question_id;
    v_active := queue.enqueue('explanation', 'question:' || p_question_id,
                              jsonb_build_object('question_id', p_question_id,
                                                 'source', 'manual',
                                                 'regenerate', p_regenerate),
                              p_priority => 10::smallint);
    RETURN QUERY SELECT 'pending'::text, v_q.ai_explanation, false, v_active;
END;
$$;


--
-- Name: request_weakness_analysis(bigint); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.request_weakness_analysis(p_quiz_id bigint) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_quiz app.quizzes;
BEGIN
    SELECT * INTO v_quiz FROM app.quizzes WHERE id = p_quiz_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'quiz % does not exist', p_quiz_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_quiz.status <> 'graded' THEN
        RAISE EXCEPTION 'quiz % is %, not graded; only graded quizzes are analysed',
            p_quiz_id, v_quiz.status USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    RETURN queue.enqueue('weakness_analysis', 'quiz:' || v_quiz.id,
                         jsonb_build_object('quiz_id', v_quiz.id, 'course_id', v_quiz.course_id));
END;
$$;


--
-- Name: retry_failed_embeddings(integer); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.retry_failed_embeddings(p_limit integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_limit integer := least(greatest(p_limit, 0), 10000);
    v_done  integer;
BEGIN
    WITH q AS (
        UPDATE app.questions x SET embedding_status = 'pending'
        WHERE x.id IN (SELECT y.id FROM app.questions y
                       WHERE y.embedding_status = 'failed' AND y.deleted_at IS NULL
                       ORDER BY y.id LIMIT v_limit)
        RETURNING x.id
    ), c AS (
        UPDATE app.document_chunks x SET embedding_status = 'pending'
        WHERE x.id IN (SELECT y.id FROM app.document_chunks y
                       JOIN app.documents d ON d.id = y.document_id
                       WHERE y.embedding_status = 'failed' AND d.deleted_at IS NULL
                       ORDER BY y.id LIMIT v_limit - (SELECT count(*) FROM q))
        RETURNING x.id
    ), jobs AS (
        SELECT queue.enqueue('embedding', 'question:' || q.id,
                             jsonb_build_object('source', 'question', 'id', q.id)) AS id
        FROM q
        UNION ALL
        SELECT queue.enqueue('embedding', 'chunk:' || c.id,
                             jsonb_build_object('source', 'chunk', 'id', c.id))
        FROM c
    )
    SELECT count(*) INTO v_done FROM jobs;
    RETURN v_done;
END;
$$;


--
-- Name: similar_questions(bigint, integer); Type: FUNCTION; Schema: app; Owner: -
--

CREATE FUNCTION app.similar_questions(p_question_id bigint, p_k integer DEFAULT 5) RETURNS TABLE(question_id bigint, similarity double precision, question_text text)
    LANGUAGE plpgsql STABLE
    SET "hnsw.iterative_scan" TO 'strict_order'
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


--
-- Name: apply_reruns(bigint[]); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.apply_reruns(p_job_ids bigint[] DEFAULT NULL::bigint[]) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_count integer;
BEGIN
    WITH taken AS (
        DELETE FROM queue.reruns r
        WHERE CASE WHEN p_job_ids IS NOT NULL THEN r.job_id = ANY(p_job_ids)
                   ELSE NOT EXISTS (SELECT 1 FROM queue.jobs j WHERE j.id = r.job_id
                                      AND j.status IN ('pending', 'running')) END
        RETURNING r.*
    ), again AS (
        INSERT INTO queue.jobs (kind, subject, payload, priority, max_attempts, requeued_from)
        SELECT t.kind, t.subject, t.payload, t.priority, t.max_attempts, t.job_id
        FROM taken t
        JOIN queue.jobs j ON j.id = t.job_id AND j.status IN ('completed', 'failed', 'skipped')
        ON CONFLICT (kind, subject) WHERE status IN ('pending', 'running') DO NOTHING
        RETURNING id
    )
    SELECT count(*) INTO v_count FROM again;
    RETURN v_count;
END;
$$;


--
-- Name: cancel(bigint, text); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.cancel(p_job_id bigint, p_reason text DEFAULT 'cancelled by operator'::text) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_status text;
BEGIN
    SELECT status INTO v_status FROM queue.jobs WHERE id = p_job_id
    FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        SELECT status INTO v_status FROM queue.jobs WHERE id = p_job_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job % does not exist', p_job_id USING ERRCODE = 'no_data_found';
        END IF;
        -- held by a claim or an operator call; a finished row only by a concurrent requeue
        IF v_status IN ('pending', 'running') THEN
            RAISE EXCEPTION 'job % is running; it cannot be cancelled mid-attempt', p_job_id
                USING ERRCODE = 'object_in_use';
        END IF;
        RETURN false;
    END IF;
    IF v_status NOT IN ('pending', 'running') THEN
        RETURN false;
    END IF;
    UPDATE queue.jobs
    SET status = 'cancelled', error_code = 'cancelled', error_message = p_reason,
        completed_at = now(), updated_at = now()
    WHERE id = p_job_id;
    RETURN true;
END;
$$;


--
-- Name: check_receipts(xid8, bigint[], text[]); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.check_receipts(p_xid xid8, p_job_ids bigint[], p_receipts text[]) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_bad bigint[];
BEGIN
    IF cardinality(p_job_ids) IS DISTINCT FROM cardinality(p_receipts) THEN
        RAISE EXCEPTION '% jobs but % receipts', cardinality(p_job_ids),
            cardinality(p_receipts) USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT array_agg(r.id ORDER BY r.id) INTO v_bad
    FROM unnest(p_job_ids, p_receipts) AS r(id, receipt)
    WHERE r.receipt IS DISTINCT FROM queue.claim_receipt(p_xid, r.id);
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'jobs % were not claimed by transaction %', v_bad, p_xid
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'only queue.claim issues receipts, for the transaction that calls it';
    END IF;
END;
$$;


--
-- Name: claim(text, integer, timestamp with time zone); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.claim(p_kind text, p_limit integer, p_now timestamp with time zone) RETURNS TABLE(id bigint, kind text, subject text, payload text, priority smallint, max_attempts integer, created_at timestamp with time zone, claim_xid text, receipt text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT j.id, j.kind, j.subject, j.payload::text, j.priority, j.max_attempts,
           j.created_at, pg_current_xact_id()::text,
           queue.claim_receipt(pg_current_xact_id(), j.id)
    FROM queue.jobs j
    WHERE j.kind = p_kind
      AND j.status = 'pending'
      AND j.run_at <= coalesce(p_now, now())
      AND NOT EXISTS (SELECT 1 FROM queue.paused_kinds p WHERE p.kind = p_kind)
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT least(greatest(p_limit, 0), 1000)
    FOR NO KEY UPDATE OF j SKIP LOCKED;
$$;


--
-- Name: claim_lost(integer, integer, integer, integer); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.claim_lost(jobs integer, expected_jobs integer, attempts integer, expected_attempts integer) RETURNS integer
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'claim no longer owns its jobs: % of % jobs, % of % attempts still its own',
        jobs, expected_jobs, attempts, expected_attempts
        USING ERRCODE = 'LW001', HINT = 'nothing of this claim was written';
END;
$$;


--
-- Name: claim_receipt(xid8, bigint); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.claim_receipt(p_xid xid8, p_job_id bigint) RETURNS text
    LANGUAGE sql STABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT encode(sha256(convert_to(s.secret, 'UTF8') || sha256(convert_to(
               s.secret || '/' || p_xid::text || '/' || p_job_id::text, 'UTF8'))), 'hex')
    FROM queue.claim_secret s;
$$;


--
-- Name: cron_field(text, integer, integer, text); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.cron_field(p_field text, p_lo integer, p_hi integer, p_what text) RETURNS integer[]
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    v_part text;
    v_m    text[];
    v_a    integer;
    v_b    integer;
    v_step integer;
    v_out  integer[] := '{}';
BEGIN
    FOREACH v_part IN ARRAY string_to_array(p_field, ',') LOOP
        v_m := regexp_match(v_part, '^(?:(\*)|([0-9]{1,2})(?:-([0-9]{1,2}))?)(?:/([0-9]{1,2}))?$');
        IF v_m IS NULL THEN
            RAISE EXCEPTION 'cron %: % is not *, a number, a range or a step (N, A-B, */S, A-B/S)',
                p_what, quote_literal(v_part) USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_a := coalesce(v_m[2]::integer, p_lo);
        v_b := CASE WHEN v_m[1] IS NOT NULL THEN p_hi
                    WHEN v_m[3] IS NOT NULL THEN v_m[3]::integer
                    WHEN v_m[4] IS NOT NULL THEN p_hi  -- A/S: from A to the end
                    ELSE v_a END;
        v_step := coalesce(v_m[4]::integer, 1);
        IF v_a < p_lo OR v_b > p_hi OR v_a > v_b OR v_step < 1 THEN
            RAISE EXCEPTION 'cron %: % is outside %-% (or empty, or a step of 0)',
                p_what, quote_literal(v_part), p_lo, p_hi
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_out := v_out || ARRAY(SELECT generate_series(v_a, v_b, v_step));
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT x FROM unnest(v_out) x ORDER BY x);
END;
$_$;


--
-- Name: cron_latest(text, timestamp with time zone, timestamp with time zone); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.cron_latest(p_cron text, p_after timestamp with time zone, p_now timestamp with time zone) RETURNS timestamp with time zone
    LANGUAGE plpgsql IMMUTABLE
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_cron    text := btrim(coalesce(p_cron, ''));
    v_f       text[];
    v_min     integer[];
    v_hour    integer[];
    v_dom     integer[];
    v_mon     integer[];
    v_dow     integer[];
    v_either  boolean;
    v_dom_ok  boolean;
    v_dow_ok  boolean;
    v_now     timestamp := date_trunc('minute', p_now AT TIME ZONE 'UTC');
    v_after   timestamp := p_after AT TIME ZONE 'UTC';
    v_day     date;
    v_h       integer;
    v_m       integer;
    v_t       timestamp;
BEGIN
    v_cron := CASE lower(v_cron)
        WHEN '@hourly' THEN '0 * * * *' WHEN '@daily' THEN '0 0 * * *'
        WHEN '@midnight' THEN '0 0 * * *' WHEN '@weekly' THEN '0 0 * * 0'
        WHEN '@monthly' THEN '0 0 1 * *' WHEN '@yearly' THEN '0 0 1 1 *'
        WHEN '@annually' THEN '0 0 1 1 *' ELSE v_cron END;
    v_f := regexp_split_to_array(v_cron, '\s+');
    IF length(v_cron) > 200 OR cardinality(v_f) <> 5 THEN
        RAISE EXCEPTION 'cron %: expected five fields (minute hour day-of-month month '
                        'day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly',
            quote_literal(left(p_cron, 200)) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_min := queue.cron_field(v_f[1], 0, 59, 'minute');
    v_hour := queue.cron_field(v_f[2], 0, 23, 'hour');
    v_dom := queue.cron_field(v_f[3], 1, 31, 'day of month');
    v_mon := queue.cron_field(v_f[4], 1, 12, 'month');
    v_dow := ARRAY(SELECT DISTINCT x % 7 FROM unnest(queue.cron_field(v_f[5], 0, 7,
                                                                      'day of week')) x);
    -- both day fields restricted: a day matching either (Vixie cron); else both must match
    v_either := v_f[3] NOT LIKE '*%' AND v_f[5] NOT LIKE '*%';
    IF p_now IS NULL OR p_after IS NULL OR NOT isfinite(p_now) THEN
        RETURN NULL;
    END IF;
    v_day := v_now::date;
    WHILE v_day >= v_after::date AND v_day > v_now::date - 1500 LOOP
        v_dom_ok := extract(day FROM v_day)::integer = ANY (v_dom);
        v_dow_ok := extract(dow FROM v_day)::integer = ANY (v_dow);
        IF extract(month FROM v_day)::integer = ANY (v_mon)
           AND ((v_either AND (v_dom_ok OR v_dow_ok)) OR (v_dom_ok AND v_dow_ok)) THEN
            FOREACH v_h IN ARRAY ARRAY(SELECT x FROM unnest(v_hour) x ORDER BY x DESC) LOOP
                -- today's later hours have not come yet
                CONTINUE WHEN v_day = v_now::date AND v_h > extract(hour FROM v_now);
                FOREACH v_m IN ARRAY ARRAY(SELECT x FROM unnest(v_min) x ORDER BY x DESC) LOOP
                    v_t := v_day + make_interval(hours => v_h, mins => v_m);
                    IF v_t <= v_now THEN
                        RETURN CASE WHEN v_t > v_after THEN v_t AT TIME ZONE 'UTC' END;
                    END IF;
                END LOOP;
            END LOOP;
        END IF;
        v_day := v_day - 1;
    END LOOP;
    RETURN NULL;
END;
$$;


--
-- Name: delete_attempts_of_deleted_jobs(); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.delete_attempts_of_deleted_jobs() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'queue'
    AS $$
BEGIN
    DELETE FROM queue.attempts a USING deleted_jobs d WHERE a.job_id = d.id;
    RETURN NULL;
END;
$$;


--
-- Name: enqueue(text, text, jsonb, smallint, timestamp with time zone, integer); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.enqueue(p_kind text, p_subject text, p_payload jsonb DEFAULT '{}'::jsonb, p_priority smallint DEFAULT 0, p_run_at timestamp with time zone DEFAULT now(), p_max_attempts integer DEFAULT 2) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO queue.jobs (kind, subject, payload, priority, run_at, max_attempts)
    VALUES (p_kind, p_subject, coalesce(p_payload, '{}'::jsonb), p_priority, p_run_at,
            p_max_attempts)
    ON CONFLICT (kind, subject) WHERE status IN ('pending', 'running') DO NOTHING
    RETURNING id INTO v_id;
    IF v_id IS NOT NULL THEN
        RETURN v_id;
    END IF;
    SELECT id INTO v_id FROM queue.jobs
    WHERE kind = p_kind AND subject = p_subject AND status IN ('pending', 'running');
    IF v_id IS NULL THEN
        RETURN NULL;  -- it ended between the insert and this read; the caller may retry
    END IF;
    PERFORM 1 FROM queue.jobs WHERE id = v_id FOR SHARE SKIP LOCKED;
    IF FOUND THEN
        -- not claimed, and no claim can start on it before this transaction commits
        PERFORM pg_notify('queue_jobs', p_kind);
    ELSE
        INSERT INTO queue.reruns AS r (job_id, kind, subject, payload, priority, max_attempts)
        VALUES (v_id, p_kind, p_subject, coalesce(p_payload, '{}'::jsonb), p_priority,
                p_max_attempts)
        ON CONFLICT (job_id) DO UPDATE
        SET payload = EXCLUDED.payload, requests = r.requests + 1, requested_at = now(),
            priority = greatest(r.priority, EXCLUDED.priority);
    END IF;
    RETURN v_id;
END;
$$;


--
-- Name: fail_unknown_kinds(interval); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.fail_unknown_kinds(p_grace interval DEFAULT '00:10:00'::interval) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    c_live  CONSTANT interval := interval '2 minutes';
    v_ids   bigint[];
    v_kinds text[];
    v_hook  record;
BEGIN
    IF p_grace IS NULL OR p_grace < interval '1 minute' THEN
        RAISE EXCEPTION 'the unknown-kind grace must be at least a minute, not %', p_grace
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM queue.workers
                   WHERE heartbeat_at > now() - c_live AND started_at <= now() - p_grace) THEN
        RETURN 0;  -- no worker alive, or the fleet is just back: every kind gets the grace
    END IF;
    WITH orphans AS (
        SELECT j.id FROM queue.jobs j
        LEFT JOIN queue.kinds_seen s ON s.kind = j.kind
        WHERE j.status = 'pending'
          AND greatest(j.created_at, s.last_seen_at) < now() - p_grace
          AND NOT EXISTS (
              SELECT 1 FROM queue.workers w
              WHERE w.heartbeat_at > now() - c_live AND j.kind = ANY (w.kinds))
          AND NOT EXISTS (SELECT 1 FROM queue.paused_kinds p WHERE p.kind = j.kind)
        FOR NO KEY UPDATE OF j SKIP LOCKED
    ), failed AS (
        UPDATE queue.jobs j
        SET status = 'failed', error_code = 'unknown_kind',
            error_message = format('no live worker runs job kind %L; check the kind, or '
                                   'start a worker that runs it and requeue', j.kind),
            completed_at = now(), updated_at = now()
        FROM orphans o
        WHERE j.id = o.id
        RETURNING j.id, j.kind
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}'), coalesce(array_agg(kind ORDER BY id), '{}')
    INTO v_ids, v_kinds FROM failed;
    FOR v_hook IN
        SELECT h.hook, array_agg(s.id ORDER BY s.id) AS ids
        FROM unnest(v_ids, v_kinds) AS s(id, kind)
        JOIN queue.failure_hooks h ON h.kind = s.kind
        GROUP BY h.hook
    LOOP
        -- regproc prints as a quoted, schema-qualified name: no text of a job is spliced
        EXECUTE format('SELECT %s($1)', v_hook.hook) USING v_hook.ids;
    END LOOP;
    RETURN cardinality(v_ids);
END;
$_$;


--
-- Name: finish_jobs(text, bigint[], text[], bigint[], integer[], text[], text[], text[], text[], double precision[], jsonb[]); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.finish_jobs(p_worker_id text, p_job_ids bigint[], p_receipts text[], p_attempt_ids bigint[], p_attempts integer[], p_statuses text[], p_outcomes text[], p_error_codes text[], p_error_messages text[], p_retry_in double precision[], p_results jsonb[]) RETURNS TABLE(jobs integer, attempts integer, lost integer, fence integer)
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT queue.check_receipts(pg_current_xact_id(), p_job_ids, p_receipts);
    WITH o AS (
        SELECT *
        FROM unnest(p_job_ids, p_attempt_ids, p_attempts, p_statuses, p_outcomes,
                    p_error_codes, p_error_messages, p_retry_in, p_results)
             AS o(job_id, attempt_id, attempts, status, outcome, error_code, error_message,
                  retry_in, result)
    ), done AS (
        UPDATE queue.jobs j
        SET status        = o.status,
            attempts      = o.attempts,
            error_code    = o.error_code,
            error_message = o.error_message,
            result        = coalesce(o.result, j.result),
            run_at        = CASE WHEN o.status = 'pending'
                                 THEN clock_timestamp() + make_interval(secs => o.retry_in)
                                 ELSE j.run_at END,
            started_at    = now(),
            completed_at  = CASE WHEN o.status = 'pending' THEN NULL
                                 ELSE clock_timestamp() END,
            worker_id     = left(p_worker_id, 200),
            updated_at    = clock_timestamp()
        FROM o
        WHERE j.id = o.job_id AND j.status = 'pending'
        RETURNING j.id
    ), att AS (
        UPDATE queue.attempts a
        SET finished_at   = clock_timestamp(),
            outcome       = o.outcome,
            error_code    = o.error_code,
            error_message = o.error_message
        FROM o
        WHERE a.id = o.attempt_id AND a.claim_xid = pg_current_xact_id()
          AND a.finished_at IS NULL
        RETURNING a.id
    ), lost AS (
        UPDATE queue.attempts a
        SET finished_at = clock_timestamp(), outcome = 'worker_lost',
            error_code = 'worker_lost'
        FROM o
        WHERE a.job_id = o.job_id AND a.finished_at IS NULL
          AND a.claim_xid <> pg_current_xact_id()
        RETURNING a.id
    ), counts AS (
        SELECT (SELECT count(*) FROM done)::int AS jobs,
               cardinality(p_job_ids) AS expected_jobs,
               (SELECT count(*) FROM att)::int AS attempts,
               (SELECT count(*) FROM unnest(p_attempt_ids) AS i WHERE i IS NOT NULL)::int
                   AS expected_attempts,
               (SELECT count(*) FROM lost)::int AS lost
    )
    SELECT c.jobs, c.attempts, c.lost,
           CASE WHEN c.jobs = c.expected_jobs AND c.attempts = c.expected_attempts THEN 0
                ELSE queue.claim_lost(c.jobs, c.expected_jobs, c.attempts,
                                      c.expected_attempts)
           END
    FROM counts c;
$$;


--
-- Name: fire_schedules(); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.fire_schedules() RETURNS TABLE(name text, slot timestamp with time zone, job_id bigint)
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT f.name, f.slot, f.job_id FROM queue.fire_schedules(now()) f;
$$;


--
-- Name: fire_schedules(timestamp with time zone); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.fire_schedules(p_now timestamp with time zone) RETURNS TABLE(name text, slot timestamp with time zone, job_id bigint)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_s    record;
    v_slot timestamptz;
    v_job  bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('queue.fire_schedules')) THEN
        RETURN;
    END IF;
    -- read without locking: a tick with nothing due writes nothing and takes no xid
    FOR v_s IN SELECT s.name, s.kind, s.cron, s.payload,
                      greatest(s.declared_at, s.last_fired_at) AS after
               FROM queue.schedules s ORDER BY s.name LOOP
        BEGIN
            v_slot := queue.cron_latest(v_s.cron, v_s.after, p_now);
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE WARNING 'schedule %: %', v_s.name, SQLERRM;
            CONTINUE;
        END;
        CONTINUE WHEN v_slot IS NULL;
        -- due: lock the row, and go on only if no one re-declared it since it was read
        PERFORM 1 FROM queue.schedules s
        WHERE s.name = v_s.name AND s.kind = v_s.kind AND s.cron = v_s.cron
          AND s.payload = v_s.payload
          AND greatest(s.declared_at, s.last_fired_at) = v_s.after
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        v_job := queue.enqueue(v_s.kind, v_s.name || ':'
                               || to_char(v_slot AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"'),
                               v_s.payload);
        UPDATE queue.schedules s SET last_fired_at = v_slot, last_job_id = v_job
        WHERE s.name = v_s.name;
        name := v_s.name; slot := v_slot; job_id := v_job;
        RETURN NEXT;
    END LOOP;
END;
$$;


--
-- Name: is_running(bigint); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.is_running(p_job_id bigint) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT EXISTS (
        SELECT 1 FROM queue.attempts a
        WHERE a.job_id = p_job_id AND a.finished_at IS NULL
          AND pg_xact_status(a.claim_xid) = 'in progress');
$$;


--
-- Name: maintenance(interval, interval, interval, interval, integer, integer); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.maintenance(p_every interval, p_completed interval, p_failed interval, p_calls interval, p_batch integer DEFAULT 5000, p_retry_cap integer DEFAULT 100) RETURNS TABLE(item text, n bigint)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    v_hook record;
    v_n    integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('queue.maintenance')) THEN
        RETURN;  -- another worker is at it
    END IF;
    IF EXISTS (SELECT 1 FROM queue.maintenance_runs
               WHERE chore = 'prune'
                 AND last_run_at > now() - greatest(p_every, interval '1 minute')) THEN
        RETURN;
    END IF;
    INSERT INTO queue.maintenance_runs (chore, last_run_at) VALUES ('prune', now())
    ON CONFLICT (chore) DO UPDATE SET last_run_at = EXCLUDED.last_run_at;
    RETURN QUERY SELECT p.item, p.deleted
                 FROM queue.prune(p_completed, p_failed, p_calls, p_batch) p;
    FOR v_hook IN SELECT h.item, h.hook FROM queue.periodic_hooks h ORDER BY h.item LOOP
        -- regproc prints as a quoted, schema-qualified name: nothing of a row is spliced
        EXECUTE format('SELECT %s($1)', v_hook.hook) INTO v_n USING p_retry_cap;
        item := v_hook.item; n := v_n; RETURN NEXT;
    END LOOP;
END;
$_$;


--
-- Name: notify_new_jobs(); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.notify_new_jobs() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    PERFORM pg_notify('queue_jobs', k.kind)
    FROM (SELECT DISTINCT n.kind FROM new_jobs n WHERE n.status = 'pending') AS k;
    RETURN NULL;
END;
$$;


--
-- Name: pause(text, text); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.pause(p_kind text, p_reason text DEFAULT NULL::text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    INSERT INTO queue.paused_kinds (kind, reason) VALUES (p_kind, left(p_reason, 500))
    ON CONFLICT (kind) DO NOTHING;
    RETURN FOUND;
END;
$$;


--
-- Name: prune(interval, interval, interval, integer, boolean); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.prune(p_completed interval DEFAULT '7 days'::interval, p_failed interval DEFAULT '30 days'::interval, p_calls interval DEFAULT '90 days'::interval, p_batch integer DEFAULT 5000, p_dry_run boolean DEFAULT false) RETURNS TABLE(item text, deleted bigint)
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_batch  integer := least(greatest(p_batch, 1), 100000);
    v_ids    bigint[];
    v_before date;
    v_calls  bigint;
BEGIN
    IF least(p_completed, p_failed, p_calls) < interval '1 hour' THEN
        RAISE EXCEPTION 'retention ages must be at least an hour'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT coalesce(array_agg(x.id), '{}') INTO v_ids FROM (
        SELECT j.id FROM queue.jobs j
        WHERE ((j.status IN ('completed', 'skipped')
                AND j.completed_at < now() - p_completed)
            OR (j.status IN ('failed', 'cancelled')
                AND j.completed_at < now() - p_failed))
          -- the latest job of its subject stays: the domain reads its outcome
          AND (j.subject IS NULL
               OR EXISTS (SELECT 1 FROM queue.jobs n
                          WHERE n.kind = j.kind AND n.subject = j.subject AND n.id > j.id))
        ORDER BY j.id
        LIMIT v_batch
        FOR UPDATE OF j SKIP LOCKED) x;
    IF NOT p_dry_run AND cardinality(v_ids) > 0 THEN
        -- a requeued job's link to a deleted one goes with it
        UPDATE queue.jobs SET requeued_from = NULL
        WHERE requeued_from = ANY (v_ids) AND NOT (id = ANY (v_ids));
        DELETE FROM queue.jobs WHERE id = ANY (v_ids);
    END IF;
    item := 'jobs'; deleted := cardinality(v_ids); RETURN NEXT;

    -- model calls of the UTC days before the cut: deleted and added to the rollup in one
    -- statement, so the daily view counts each call once at every moment
    v_before := ((now() - p_calls) AT TIME ZONE 'UTC')::date;
    IF p_dry_run THEN
        SELECT count(*) INTO v_calls FROM (
            SELECT 1 FROM queue.model_calls
            WHERE created_at < v_before::timestamp AT TIME ZONE 'UTC' LIMIT v_batch) c;
    ELSE
        WITH gone AS (
            DELETE FROM queue.model_calls
            WHERE id IN (SELECT id FROM queue.model_calls
                         WHERE created_at < v_before::timestamp AT TIME ZONE 'UTC'
                         ORDER BY created_at LIMIT v_batch)
            RETURNING *
        ), days AS (
            INSERT INTO queue.model_usage_rollup AS r
            SELECT (created_at AT TIME ZONE 'UTC')::date, kind, backend, model, count(*),
                   count(*) FILTER (WHERE outcome = 'ok'),
                   count(*) FILTER (WHERE outcome = 'invalid'),
                   count(*) FILTER (WHERE outcome = 'error'),
                   coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),
                   sum(latency_ms), sum(gate_wait_ms)
            FROM gone
            GROUP BY 1, kind, backend, model
            ON CONFLICT (day, kind, backend, model) DO UPDATE
            SET calls = r.calls + EXCLUDED.calls,
                ok_calls = r.ok_calls + EXCLUDED.ok_calls,
                invalid_calls = r.invalid_calls + EXCLUDED.invalid_calls,
                error_calls = r.error_calls + EXCLUDED.error_calls,
                prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
                completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
                latency_ms = r.latency_ms + EXCLUDED.latency_ms,
                gate_wait_ms = r.gate_wait_ms + EXCLUDED.gate_wait_ms
            RETURNING 1
        )
        SELECT count(*) INTO v_calls FROM gone;
    END IF;
    item := 'model_calls'; deleted := v_calls; RETURN NEXT;
END;
$$;


--
-- Name: rate_block(text, double precision); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.rate_block(p_key text, p_seconds double precision) RETURNS void
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    INSERT INTO queue.rate_limiters AS r (key, blocked_until)
    VALUES (left(p_key, 500),
            clock_timestamp() + make_interval(secs => least(greatest(p_seconds, 0), 3600)))
    ON CONFLICT (key) DO UPDATE
    SET blocked_until = greatest(r.blocked_until, EXCLUDED.blocked_until);
$$;


--
-- Name: rate_take(text, integer, integer, double precision, integer); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.rate_take(p_key text, p_requests integer, p_tokens_max integer, p_window double precision, p_tokens integer) RETURNS double precision
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_key     text := left(p_key, 500);
    v_now     timestamptz;
    v_since   timestamptz;
    v_blocked timestamptz;
    v_count   integer;
    v_sum     bigint;
    v_free_at timestamptz;
BEGIN
    INSERT INTO queue.rate_limiters (key) VALUES (v_key) ON CONFLICT DO NOTHING;
    SELECT blocked_until INTO v_blocked FROM queue.rate_limiters
    WHERE key = v_key FOR UPDATE;
    v_now := clock_timestamp();  -- after the wait for the row, if there was one
    v_since := v_now - make_interval(secs => p_window);
    IF v_blocked > v_now THEN
        RETURN extract(epoch FROM v_blocked - v_now);
    END IF;
    DELETE FROM queue.rate_events WHERE key = v_key AND at <= v_since;
    SELECT count(*), coalesce(sum(tokens), 0) INTO v_count, v_sum
    FROM queue.rate_events WHERE key = v_key;
    IF (p_requests IS NULL OR v_count < p_requests)
       AND (p_tokens_max IS NULL OR v_sum + p_tokens <= p_tokens_max OR v_count = 0) THEN
        INSERT INTO queue.rate_events (key, at, tokens)
        VALUES (v_key, v_now, greatest(p_tokens, 0));
        RETURN 0;
    END IF;
    -- the earliest moment enough of the window's events have aged out: the oldest event
    -- whose going leaves room for one more request and for p_tokens more tokens
    SELECT min(e.at) INTO v_free_at
    FROM (SELECT at,
                 count(*) OVER (ORDER BY at ROWS UNBOUNDED PRECEDING) AS gone,
                 sum(tokens) OVER (ORDER BY at ROWS UNBOUNDED PRECEDING) AS gone_tokens
          FROM queue.rate_events WHERE key = v_key) e
    WHERE (p_requests IS NULL OR v_count - e.gone < p_requests)
      AND (p_tokens_max IS NULL OR v_sum - e.gone_tokens + p_tokens <= p_tokens_max
           OR e.gone = v_count);
    RETURN greatest(extract(epoch FROM v_free_at + make_interval(secs => p_window) - v_now),
                    0.001);
END;
$$;


--
-- Name: record_attempts(bigint[], text[], xid8, text); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.record_attempts(p_job_ids bigint[], p_receipts text[], p_claim_xid xid8, p_worker_id text) RETURNS TABLE(job_id bigint, prior integer, attempt_id bigint, attempt integer, last_outcome text)
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    SELECT queue.check_receipts(p_claim_xid, p_job_ids, p_receipts);
    WITH j AS (
        SELECT x.id, x.max_attempts,
               (SELECT count(*) FILTER (WHERE a.outcome IS NULL
                                          OR a.outcome NOT IN ('superseded', 'snoozed'))
                       + greatest(count(*) FILTER (WHERE a.outcome = 'superseded') - 3, 0)
                       + greatest(count(*) FILTER (WHERE a.outcome = 'snoozed') - 20, 0)
                FROM queue.attempts a
                WHERE a.job_id = x.id
                  AND a.claim_xid <> p_claim_xid
                  AND a.outcome IS DISTINCT FROM 'released'
                  AND a.outcome IS DISTINCT FROM 'deferred')::int AS prior
        FROM queue.jobs x
        WHERE x.id = ANY(p_job_ids)
    ), ins AS (
        INSERT INTO queue.attempts (job_id, attempt, worker_id, claim_xid)
        SELECT j.id, j.prior + 1, left(p_worker_id, 200), p_claim_xid
        FROM j
        WHERE j.prior < j.max_attempts
        ON CONFLICT (job_id, claim_xid) DO NOTHING
        RETURNING id, job_id, attempt
    ), earlier AS (
        SELECT a.id, a.job_id, a.attempt FROM queue.attempts a
        WHERE a.claim_xid = p_claim_xid AND a.job_id = ANY(p_job_ids)
    )
    SELECT j.id, j.prior,
           coalesce(ins.id, earlier.id),
           coalesce(ins.attempt, earlier.attempt),
           -- for a job with no attempt left: how its last one ended (why it is spent)
           CASE WHEN ins.id IS NULL AND earlier.id IS NULL THEN
               (SELECT a.outcome FROM queue.attempts a
                WHERE a.job_id = j.id AND a.claim_xid <> p_claim_xid
                ORDER BY a.id DESC LIMIT 1)
           END
    FROM j
    LEFT JOIN ins ON ins.job_id = j.id
    LEFT JOIN earlier ON earlier.job_id = j.id;
$$;


--
-- Name: release_attempts(bigint[], text[]); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.release_attempts(p_attempt_ids bigint[], p_receipts text[]) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
DECLARE
    v_released integer;
BEGIN
    IF cardinality(p_attempt_ids) IS DISTINCT FROM cardinality(p_receipts) OR EXISTS (
        SELECT 1 FROM unnest(p_attempt_ids, p_receipts) AS r(id, receipt)
        LEFT JOIN queue.attempts a ON a.id = r.id
        WHERE a.id IS NULL
           OR r.receipt IS DISTINCT FROM queue.claim_receipt(a.claim_xid, a.job_id)) THEN
        RAISE EXCEPTION 'attempts without their claim''s receipt cannot be released'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE queue.attempts
    SET finished_at = clock_timestamp(), outcome = 'released'
    WHERE id = ANY(p_attempt_ids) AND finished_at IS NULL;
    GET DIAGNOSTICS v_released = ROW_COUNT;
    RETURN v_released;
END;
$$;


--
-- Name: requeue(bigint); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.requeue(p_job_id bigint) RETURNS bigint
    LANGUAGE sql
    AS $$
    SELECT r.job_id FROM queue.requeue_job(p_job_id) AS r;
$$;


--
-- Name: requeue_failed(text, text, interval, timestamp with time zone); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.requeue_failed(p_kind text DEFAULT NULL::text, p_error_code text DEFAULT NULL::text, p_older_than interval DEFAULT NULL::interval, p_since timestamp with time zone DEFAULT NULL::timestamp with time zone) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_id      bigint;
    v_created boolean;
    v_count   integer := 0;
BEGIN
    FOR v_id IN
        SELECT DISTINCT ON (j.kind, coalesce(j.subject, j.id::text)) j.id
        FROM queue.jobs j
        WHERE j.status = 'failed'
          AND j.requeued_to IS NULL
          AND (p_kind IS NULL OR j.kind = p_kind)
          AND (p_error_code IS NULL OR j.error_code = p_error_code)
          AND (p_older_than IS NULL OR j.completed_at <= now() - p_older_than)
          AND (p_since IS NULL OR j.completed_at >= p_since)
          AND NOT EXISTS (
              SELECT 1 FROM queue.jobs later
              WHERE later.kind = j.kind AND later.subject = j.subject AND later.id > j.id)
        ORDER BY j.kind, coalesce(j.subject, j.id::text), j.id DESC
    LOOP
        -- counted only if this call made the new job (a concurrent call may have)
        SELECT r.created INTO v_created FROM queue.requeue_job(v_id) AS r;
        IF v_created THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END;
$$;


--
-- Name: requeue_job(bigint); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.requeue_job(p_job_id bigint, OUT job_id bigint, OUT created boolean) RETURNS record
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_job queue.jobs;
    v_new bigint;
BEGIN
    SELECT * INTO v_job FROM queue.jobs WHERE id = p_job_id FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        SELECT * INTO v_job FROM queue.jobs WHERE id = p_job_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job % does not exist', p_job_id USING ERRCODE = 'no_data_found';
        END IF;
        IF v_job.status IN ('pending', 'running') THEN
            IF queue.is_running(p_job_id) THEN
                RAISE EXCEPTION 'job % is running; requeue it after its attempt ends', p_job_id
                    USING ERRCODE = 'object_in_use';
            END IF;
            -- A lock without a running attempt is a worker claiming it right now or another
            -- operator call: either way it is about to be handled, which is what was asked.
            job_id := p_job_id;
            created := false;
            RETURN;
        END IF;
        -- Workers never lock finished rows, so this waits only for a concurrent requeue, and
        -- returns the row as that requeue committed it.
        SELECT * INTO v_job FROM queue.jobs WHERE id = p_job_id FOR NO KEY UPDATE;
    END IF;

    IF v_job.status IN ('pending', 'running') THEN
        -- Locked here, so no claim holds it. Workers never store `running`; one set by hand
        -- would otherwise never run.
        UPDATE queue.jobs SET status = 'pending', run_at = now(), updated_at = now()
        WHERE id = p_job_id;
        PERFORM pg_notify('queue_jobs', v_job.kind);
        job_id := p_job_id;
        created := false;
        RETURN;
    END IF;

    IF v_job.requeued_to IS NOT NULL THEN
        job_id := v_job.requeued_to;
        created := false;
        RETURN;
    END IF;

    INSERT INTO queue.jobs (kind, subject, payload, priority, max_attempts, requeued_from)
    VALUES (v_job.kind, v_job.subject, v_job.payload, v_job.priority, v_job.max_attempts,
            v_job.id)
    ON CONFLICT (kind, subject) WHERE status IN ('pending', 'running') DO NOTHING
    RETURNING id INTO v_new;
    IF v_new IS NULL THEN
        SELECT id INTO v_new FROM queue.jobs
        WHERE kind = v_job.kind AND subject = v_job.subject
          AND status IN ('pending', 'running');
        job_id := v_new;
        created := false;
        RETURN;
    END IF;
    UPDATE queue.jobs SET requeued_to = v_new, updated_at = now() WHERE id = p_job_id;
    job_id := v_new;
    created := true;
END;
$$;


--
-- Name: resume(text); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.resume(p_kind text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    DELETE FROM queue.paused_kinds WHERE kind = p_kind;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('queue_jobs', p_kind);
    RETURN true;
END;
$$;


--
-- Name: schedule(text, text, text, jsonb); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.schedule(p_name text, p_kind text, p_cron text, p_payload jsonb DEFAULT '{}'::jsonb) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $_$
DECLARE
    v_new boolean;
BEGIN
    -- a cron that cannot be read, or names no minute in four years (30 February), is refused
    IF queue.cron_latest(p_cron, now(), now() + interval '1500 days') IS NULL THEN
        RAISE EXCEPTION 'cron %: it names no time that ever comes', quote_literal(p_cron)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_name IS NULL OR p_name !~ '^[A-Za-z0-9_.-]{1,100}$' THEN
        RAISE EXCEPTION 'schedule name %: use 1-100 letters, digits, _ . -',
            quote_literal(left(p_name, 100)) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO queue.schedules AS s (name, kind, cron, payload)
    VALUES (p_name, p_kind, btrim(p_cron), coalesce(p_payload, '{}'::jsonb))
    ON CONFLICT (name) DO UPDATE
    SET kind = EXCLUDED.kind, cron = EXCLUDED.cron, payload = EXCLUDED.payload,
        declared_at = now(), declared_by = session_user
    RETURNING (xmax = 0) INTO v_new;
    RETURN v_new;
END;
$_$;


--
-- Name: unschedule(text); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.unschedule(p_name text) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    DELETE FROM queue.schedules WHERE name = p_name;
    RETURN FOUND;
END;
$$;


--
-- Name: worker_alive(text, text[], boolean); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.worker_alive(p_worker_id text, p_kinds text[], p_started boolean) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
BEGIN
    INSERT INTO queue.workers AS w (worker_id, kinds, login)
    VALUES (left(p_worker_id, 200), p_kinds[1:100], session_user)
    ON CONFLICT (worker_id) DO UPDATE
    SET kinds = EXCLUDED.kinds, heartbeat_at = now(),
        started_at = CASE WHEN p_started THEN now() ELSE w.started_at END
    WHERE w.login = session_user;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker id % is registered by another login', p_worker_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO queue.kinds_seen (kind, last_seen_at)
    SELECT DISTINCT k, now() FROM unnest(p_kinds[1:100]) AS k
    ON CONFLICT (kind) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at;
END;
$$;


--
-- Name: worker_stopped(text); Type: FUNCTION; Schema: queue; Owner: -
--

CREATE FUNCTION queue.worker_stopped(p_worker_id text) RETURNS void
    LANGUAGE sql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'pg_temp'
    AS $$
    INSERT INTO queue.kinds_seen (kind, last_seen_at)
    SELECT DISTINCT k, now() FROM queue.workers w, unnest(w.kinds) AS k
    WHERE w.worker_id = p_worker_id AND w.login = session_user
    ON CONFLICT (kind) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at;
    DELETE FROM queue.workers WHERE worker_id = p_worker_id AND login = session_user;
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: budgets; Type: TABLE; Schema: app; Owner: -
--

CREATE TABLE app.budgets (
    name text NOT NULL,
    value integer NOT NULL,
    note text NOT NULL,
    CONSTRAINT budgets_value_check CHECK ((value >= 1))
);


--
-- Name: courses; Type: TABLE; Schema: app; Owner: -
--

CREATE TABLE app.courses (
    id bigint NOT NULL,
    user_id bigint NOT NULL,
    title text NOT NULL,
    course_weakness_analysis jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: courses_id_seq; Type: SEQUENCE; Schema: app; Owner: -
--

ALTER TABLE app.courses ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME app.courses_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: document_chunks; Type: TABLE; Schema: app; Owner: -
--

CREATE TABLE app.document_chunks (
    id bigint NOT NULL,
    document_id bigint NOT NULL,
    chunk_index integer NOT NULL,
    content text NOT NULL,
    embedding public.vector(1024),
    embedding_status text DEFAULT 'none'::text NOT NULL,
    embedding_updated_at timestamp with time zone,
    embedding_model text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT document_chunks_embedding_status_check CHECK ((embedding_status = ANY (ARRAY['none'::text, 'pending'::text, 'ready'::text, 'failed'::text, 'stale'::text])))
);


--
-- Name: document_chunks_id_seq; Type: SEQUENCE; Schema: app; Owner: -
--

ALTER TABLE app.document_chunks ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME app.document_chunks_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: documents; Type: TABLE; Schema: app; Owner: -
--

CREATE TABLE app.documents (
    id bigint NOT NULL,
    course_id bigint NOT NULL,
    title text NOT NULL,
    content text,
    ai_summary text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    deleted_at timestamp with time zone
);


--
-- Name: documents_id_seq; Type: SEQUENCE; Schema: app; Owner: -
--

ALTER TABLE app.documents ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME app.documents_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: questions; Type: TABLE; Schema: app; Owner: -
--

CREATE TABLE app.questions (
    id bigint NOT NULL,
    course_id bigint NOT NULL,
    question_type text DEFAULT 'multiple_choice'::text NOT NULL,
    question_text text NOT NULL,
    choice_1 text,
    choice_2 text,
    choice_3 text,
    choice_4 text,
    correct_choice smallint,
    reference_answer text,
    max_score numeric,
    explanation text,
    subject text,
    scope text,
    exam_name text,
    exam_round text,
    source_note text,
    is_active boolean DEFAULT true NOT NULL,
    deleted_at timestamp with time zone,
    ai_explanation text,
    ai_explanation_status text DEFAULT 'none'::text NOT NULL,
    ai_explanation_generated_at timestamp with time zone,
    ai_explanation_model text,
    embedding public.vector(1024),
    embedding_status text DEFAULT 'none'::text NOT NULL,
    embedding_updated_at timestamp with time zone,
    embedding_model text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT questions_ai_explanation_status_check CHECK ((ai_explanation_status = ANY (ARRAY['none'::text, 'pending'::text, 'ready'::text, 'failed'::text, 'stale'::text, 'skipped'::text]))),
    CONSTRAINT questions_correct_choice_check CHECK (((correct_choice >= 1) AND (correct_choice <= 4))),
    CONSTRAINT questions_embedding_status_check CHECK ((embedding_status = ANY (ARRAY['none'::text, 'pending'::text, 'ready'::text, 'failed'::text, 'stale'::text]))),
    CONSTRAINT questions_question_type_check CHECK ((question_type = ANY (ARRAY['multiple_choice'::text, 'descriptive'::text])))
);


--
-- Name: questions_id_seq; Type: SEQUENCE; Schema: app; Owner: -
--

ALTER TABLE app.questions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME app.questions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: quiz_answers; Type: TABLE; Schema: app; Owner: -
--

CREATE TABLE app.quiz_answers (
    id bigint NOT NULL,
    quiz_id bigint NOT NULL,
    question_id bigint NOT NULL,
    selected_choice smallint,
    answer_text text,
    is_correct boolean,
    unsure boolean DEFAULT false NOT NULL,
    score numeric,
    max_score numeric,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: quiz_answers_id_seq; Type: SEQUENCE; Schema: app; Owner: -
--

ALTER TABLE app.quiz_answers ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME app.quiz_answers_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: quizzes; Type: TABLE; Schema: app; Owner: -
--

CREATE TABLE app.quizzes (
    id bigint NOT NULL,
    course_id bigint NOT NULL,
    user_id bigint NOT NULL,
    kind text DEFAULT 'quiz'::text NOT NULL,
    title text,
    status text DEFAULT 'in_progress'::text NOT NULL,
    graded_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT quizzes_kind_check CHECK ((kind = ANY (ARRAY['quiz'::text, 'mock_exam'::text]))),
    CONSTRAINT quizzes_status_check CHECK ((status = ANY (ARRAY['draft'::text, 'in_progress'::text, 'submitted'::text, 'grading'::text, 'graded'::text])))
);


--
-- Name: quizzes_id_seq; Type: SEQUENCE; Schema: app; Owner: -
--

ALTER TABLE app.quizzes ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME app.quizzes_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: users; Type: TABLE; Schema: app; Owner: -
--

CREATE TABLE app.users (
    id bigint NOT NULL,
    email text,
    display_name text,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: users_id_seq; Type: SEQUENCE; Schema: app; Owner: -
--

ALTER TABLE app.users ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME app.users_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: attempts; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.attempts (
    id bigint NOT NULL,
    job_id bigint NOT NULL,
    attempt integer NOT NULL,
    worker_id text NOT NULL,
    claim_xid xid8 NOT NULL,
    started_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    finished_at timestamp with time zone,
    outcome text,
    error_code text,
    error_message text
)
WITH (autovacuum_vacuum_scale_factor='0', autovacuum_vacuum_threshold='2000', autovacuum_vacuum_cost_delay='0', autovacuum_vacuum_insert_scale_factor='0', autovacuum_vacuum_insert_threshold='20000');


--
-- Name: attempts_id_seq; Type: SEQUENCE; Schema: queue; Owner: -
--

ALTER TABLE queue.attempts ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME queue.attempts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: claim_secret; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.claim_secret (
    secret text NOT NULL
);


--
-- Name: TABLE claim_secret; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.claim_secret IS 'The key of claim receipts; readable by the owner of the queue functions only.';


--
-- Name: failure_hooks; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.failure_hooks (
    kind text NOT NULL,
    hook regproc NOT NULL
);


--
-- Name: TABLE failure_hooks; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.failure_hooks IS 'Per job kind, a function(bigint[]) run on the ids of jobs the unknown-kind sweep failed.';


--
-- Name: jobs; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.jobs (
    id bigint NOT NULL,
    kind text NOT NULL,
    subject text,
    payload jsonb DEFAULT '{}'::jsonb NOT NULL,
    status text DEFAULT 'pending'::text NOT NULL,
    priority smallint DEFAULT 0 NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    max_attempts integer DEFAULT 2 NOT NULL,
    run_at timestamp with time zone DEFAULT now() NOT NULL,
    error_code text,
    error_message text,
    result jsonb,
    worker_id text,
    requeued_from bigint,
    requeued_to bigint,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    started_at timestamp with time zone,
    completed_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT jobs_attempts_check CHECK ((attempts >= 0)),
    CONSTRAINT jobs_kind_check CHECK ((kind <> ''::text)),
    CONSTRAINT jobs_max_attempts_check CHECK ((max_attempts >= 1)),
    CONSTRAINT jobs_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'running'::text, 'completed'::text, 'failed'::text, 'skipped'::text, 'cancelled'::text]))),
    CONSTRAINT payload_is_object CHECK ((jsonb_typeof(payload) = 'object'::text)),
    CONSTRAINT terminal_has_completed_at CHECK (((status = ANY (ARRAY['pending'::text, 'running'::text])) = (completed_at IS NULL)))
)
WITH (fillfactor='80', autovacuum_vacuum_scale_factor='0', autovacuum_vacuum_threshold='2000', autovacuum_vacuum_cost_delay='0', autovacuum_analyze_scale_factor='0.02');


--
-- Name: TABLE jobs; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.jobs IS 'Job rows. A pending row locked by a worker transaction is running; see queue.job_states.';


--
-- Name: job_states; Type: VIEW; Schema: queue; Owner: -
--

CREATE VIEW queue.job_states AS
 SELECT id,
    kind,
    subject,
    payload,
    status,
    priority,
    attempts,
    max_attempts,
    run_at,
    error_code,
    error_message,
    result,
    worker_id,
    requeued_from,
    requeued_to,
    created_at,
    started_at,
    completed_at,
    updated_at,
        CASE
            WHEN ((status = 'pending'::text) AND (EXISTS ( SELECT 1
               FROM queue.attempts a
              WHERE ((a.job_id = j.id) AND (a.finished_at IS NULL) AND (pg_xact_status(a.claim_xid) = 'in progress'::text))))) THEN 'running'::text
            ELSE status
        END AS state
   FROM queue.jobs j;


--
-- Name: jobs_id_seq; Type: SEQUENCE; Schema: queue; Owner: -
--

ALTER TABLE queue.jobs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME queue.jobs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: kinds_seen; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.kinds_seen (
    kind text NOT NULL,
    last_seen_at timestamp with time zone NOT NULL
);


--
-- Name: TABLE kinds_seen; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.kinds_seen IS 'The last time a live worker served each job kind; kept when the worker stops.';


--
-- Name: maintenance_runs; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.maintenance_runs (
    chore text NOT NULL,
    last_run_at timestamp with time zone NOT NULL
);


--
-- Name: migrations; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.migrations (
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: model_calls; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.model_calls (
    id bigint NOT NULL,
    job_id bigint,
    attempt_id bigint,
    kind text NOT NULL,
    call text NOT NULL,
    backend text NOT NULL,
    model text NOT NULL,
    gate text,
    prompt_version integer,
    round smallint DEFAULT 1 NOT NULL,
    prompt_tokens integer,
    completion_tokens integer,
    latency_ms double precision NOT NULL,
    gate_wait_ms double precision DEFAULT 0 NOT NULL,
    outcome text NOT NULL,
    error_code text,
    created_at timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    CONSTRAINT model_calls_call_check CHECK ((call = ANY (ARRAY['chat'::text, 'embedding'::text]))),
    CONSTRAINT model_calls_check CHECK (((outcome = 'ok'::text) = (error_code IS NULL))),
    CONSTRAINT model_calls_completion_tokens_check CHECK ((completion_tokens >= 0)),
    CONSTRAINT model_calls_gate_wait_ms_check CHECK ((gate_wait_ms >= (0)::double precision)),
    CONSTRAINT model_calls_latency_ms_check CHECK ((latency_ms >= (0)::double precision)),
    CONSTRAINT model_calls_outcome_check CHECK ((outcome = ANY (ARRAY['ok'::text, 'invalid'::text, 'error'::text]))),
    CONSTRAINT model_calls_prompt_tokens_check CHECK ((prompt_tokens >= 0)),
    CONSTRAINT model_calls_round_check CHECK ((round >= 1))
);


--
-- Name: TABLE model_calls; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.model_calls IS 'One row per model round trip, committed independently of the job''s transaction.';


--
-- Name: model_calls_id_seq; Type: SEQUENCE; Schema: queue; Owner: -
--

ALTER TABLE queue.model_calls ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME queue.model_calls_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: model_usage_rollup; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.model_usage_rollup (
    day date NOT NULL,
    kind text NOT NULL,
    backend text NOT NULL,
    model text NOT NULL,
    calls bigint NOT NULL,
    ok_calls bigint NOT NULL,
    invalid_calls bigint NOT NULL,
    error_calls bigint NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    latency_ms double precision NOT NULL,
    gate_wait_ms double precision NOT NULL
);


--
-- Name: TABLE model_usage_rollup; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.model_usage_rollup IS 'Daily model usage of calls already deleted by queue.prune; queue.model_usage_daily adds it.';


--
-- Name: model_usage_daily; Type: VIEW; Schema: queue; Owner: -
--

CREATE VIEW queue.model_usage_daily AS
 SELECT day,
    kind,
    backend,
    model,
    (sum(calls))::bigint AS calls,
    (sum(ok_calls))::bigint AS ok_calls,
    (sum(invalid_calls))::bigint AS invalid_calls,
    (sum(error_calls))::bigint AS error_calls,
    (sum(prompt_tokens))::bigint AS prompt_tokens,
    (sum(completion_tokens))::bigint AS completion_tokens,
    ((sum(prompt_tokens) + sum(completion_tokens)))::bigint AS total_tokens,
    sum(latency_ms) AS latency_ms,
    (sum(latency_ms) / (NULLIF(sum(calls), (0)::numeric))::double precision) AS avg_latency_ms,
    sum(gate_wait_ms) AS gate_wait_ms
   FROM ( SELECT ((model_calls.created_at AT TIME ZONE 'UTC'::text))::date AS day,
            model_calls.kind,
            model_calls.backend,
            model_calls.model,
            count(*) AS calls,
            count(*) FILTER (WHERE (model_calls.outcome = 'ok'::text)) AS ok_calls,
            count(*) FILTER (WHERE (model_calls.outcome = 'invalid'::text)) AS invalid_calls,
            count(*) FILTER (WHERE (model_calls.outcome = 'error'::text)) AS error_calls,
            COALESCE(sum(model_calls.prompt_tokens), (0)::bigint) AS prompt_tokens,
            COALESCE(sum(model_calls.completion_tokens), (0)::bigint) AS completion_tokens,
            sum(model_calls.latency_ms) AS latency_ms,
            sum(model_calls.gate_wait_ms) AS gate_wait_ms
           FROM queue.model_calls
          GROUP BY (((model_calls.created_at AT TIME ZONE 'UTC'::text))::date), model_calls.kind, model_calls.backend, model_calls.model
        UNION ALL
         SELECT model_usage_rollup.day,
            model_usage_rollup.kind,
            model_usage_rollup.backend,
            model_usage_rollup.model,
            model_usage_rollup.calls,
            model_usage_rollup.ok_calls,
            model_usage_rollup.invalid_calls,
            model_usage_rollup.error_calls,
            model_usage_rollup.prompt_tokens,
            model_usage_rollup.completion_tokens,
            model_usage_rollup.latency_ms,
            model_usage_rollup.gate_wait_ms
           FROM queue.model_usage_rollup) u
  GROUP BY day, kind, backend, model;


--
-- Name: model_usage_per_job; Type: VIEW; Schema: queue; Owner: -
--

CREATE VIEW queue.model_usage_per_job AS
 SELECT job_id,
    min(kind) AS kind,
    count(*) AS calls,
    count(DISTINCT attempt_id) AS attempts,
    count(*) FILTER (WHERE (outcome <> 'ok'::text)) AS failed_calls,
    COALESCE(sum(prompt_tokens), (0)::bigint) AS prompt_tokens,
    COALESCE(sum(completion_tokens), (0)::bigint) AS completion_tokens,
    sum(latency_ms) AS latency_ms,
    sum(gate_wait_ms) AS gate_wait_ms,
    min(created_at) AS first_call_at,
    max(created_at) AS last_call_at
   FROM queue.model_calls
  WHERE (job_id IS NOT NULL)
  GROUP BY job_id;


--
-- Name: paused_kinds; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.paused_kinds (
    kind text NOT NULL,
    paused_at timestamp with time zone DEFAULT now() NOT NULL,
    paused_by name DEFAULT SESSION_USER NOT NULL,
    reason text,
    CONSTRAINT paused_kinds_kind_check CHECK ((kind <> ''::text)),
    CONSTRAINT paused_kinds_reason_check CHECK ((length(reason) <= 500))
);


--
-- Name: TABLE paused_kinds; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.paused_kinds IS 'Job kinds no worker claims until queue.resume(kind); written by queue.pause.';


--
-- Name: periodic_hooks; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.periodic_hooks (
    item text NOT NULL,
    hook regproc NOT NULL
);


--
-- Name: TABLE periodic_hooks; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.periodic_hooks IS 'Chores queue.maintenance runs once per interval: item -> function(cap integer) returns integer.';


--
-- Name: rate_events; Type: TABLE; Schema: queue; Owner: -
--

CREATE UNLOGGED TABLE queue.rate_events (
    key text NOT NULL,
    at timestamp with time zone NOT NULL,
    tokens integer NOT NULL
);


--
-- Name: TABLE rate_events; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.rate_events IS 'Requests sent per rate-limited model endpoint in the current window (queue.rate_take).';


--
-- Name: rate_limiters; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.rate_limiters (
    key text NOT NULL,
    blocked_until timestamp with time zone
);


--
-- Name: reruns; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.reruns (
    job_id bigint NOT NULL,
    kind text NOT NULL,
    subject text,
    payload jsonb NOT NULL,
    priority smallint NOT NULL,
    max_attempts integer NOT NULL,
    requests integer DEFAULT 1 NOT NULL,
    requested_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: TABLE reruns; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.reruns IS 'Requests to run a job again after it ends: an enqueue met it while a claim held it.';


--
-- Name: schedules; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.schedules (
    name text NOT NULL,
    kind text NOT NULL,
    cron text NOT NULL,
    payload jsonb DEFAULT '{}'::jsonb NOT NULL,
    declared_at timestamp with time zone DEFAULT now() NOT NULL,
    declared_by name DEFAULT SESSION_USER NOT NULL,
    last_fired_at timestamp with time zone,
    last_job_id bigint,
    CONSTRAINT schedules_kind_check CHECK (((kind <> ''::text) AND (length(kind) <= 200))),
    CONSTRAINT schedules_name_check CHECK ((name ~ '^[A-Za-z0-9_.-]{1,100}$'::text)),
    CONSTRAINT schedules_payload_check CHECK (((jsonb_typeof(payload) = 'object'::text) AND (octet_length((payload)::text) <= 65536) AND (NOT jsonb_path_exists(payload, 'strict $.**{32}'::jsonpath))))
);


--
-- Name: TABLE schedules; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.schedules IS 'Jobs enqueued on a cron schedule (UTC) by queue.fire_schedules; written by queue.schedule.';


--
-- Name: stats; Type: VIEW; Schema: queue; Owner: -
--

CREATE VIEW queue.stats AS
 SELECT kind,
    state,
    count(*) AS jobs,
    max((now() - run_at)) FILTER (WHERE ((state = 'pending'::text) AND (run_at <= now()))) AS oldest_pending_age
   FROM queue.job_states
  GROUP BY kind, state;


--
-- Name: workers; Type: TABLE; Schema: queue; Owner: -
--

CREATE TABLE queue.workers (
    worker_id text NOT NULL,
    kinds text[] NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    heartbeat_at timestamp with time zone DEFAULT now() NOT NULL,
    login name DEFAULT SESSION_USER NOT NULL
);


--
-- Name: TABLE workers; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON TABLE queue.workers IS 'Live workers and their job kinds; a row is refreshed every heartbeat and removed on stop.';


--
-- Name: budgets budgets_pkey; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.budgets
    ADD CONSTRAINT budgets_pkey PRIMARY KEY (name);


--
-- Name: courses courses_pkey; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.courses
    ADD CONSTRAINT courses_pkey PRIMARY KEY (id);


--
-- Name: document_chunks document_chunks_document_id_chunk_index_key; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.document_chunks
    ADD CONSTRAINT document_chunks_document_id_chunk_index_key UNIQUE (document_id, chunk_index);


--
-- Name: document_chunks document_chunks_pkey; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.document_chunks
    ADD CONSTRAINT document_chunks_pkey PRIMARY KEY (id);


--
-- Name: documents documents_pkey; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.documents
    ADD CONSTRAINT documents_pkey PRIMARY KEY (id);


--
-- Name: questions questions_pkey; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.questions
    ADD CONSTRAINT questions_pkey PRIMARY KEY (id);


--
-- Name: quiz_answers quiz_answers_pkey; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.quiz_answers
    ADD CONSTRAINT quiz_answers_pkey PRIMARY KEY (id);


--
-- Name: quiz_answers quiz_answers_quiz_id_question_id_key; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.quiz_answers
    ADD CONSTRAINT quiz_answers_quiz_id_question_id_key UNIQUE (quiz_id, question_id);


--
-- Name: quizzes quizzes_pkey; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.quizzes
    ADD CONSTRAINT quizzes_pkey PRIMARY KEY (id);


--
-- Name: users users_email_key; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.users
    ADD CONSTRAINT users_email_key UNIQUE (email);


--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);


--
-- Name: attempts attempts_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.attempts
    ADD CONSTRAINT attempts_pkey PRIMARY KEY (id);


--
-- Name: failure_hooks failure_hooks_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.failure_hooks
    ADD CONSTRAINT failure_hooks_pkey PRIMARY KEY (kind);


--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);


--
-- Name: kinds_seen kinds_seen_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.kinds_seen
    ADD CONSTRAINT kinds_seen_pkey PRIMARY KEY (kind);


--
-- Name: maintenance_runs maintenance_runs_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.maintenance_runs
    ADD CONSTRAINT maintenance_runs_pkey PRIMARY KEY (chore);


--
-- Name: jobs max_attempts_bounded; Type: CHECK CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE queue.jobs
    ADD CONSTRAINT max_attempts_bounded CHECK ((max_attempts <= 25)) NOT VALID;


--
-- Name: migrations migrations_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.migrations
    ADD CONSTRAINT migrations_pkey PRIMARY KEY (version);


--
-- Name: model_calls model_calls_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.model_calls
    ADD CONSTRAINT model_calls_pkey PRIMARY KEY (id);


--
-- Name: model_usage_rollup model_usage_rollup_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.model_usage_rollup
    ADD CONSTRAINT model_usage_rollup_pkey PRIMARY KEY (day, kind, backend, model);


--
-- Name: paused_kinds paused_kinds_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.paused_kinds
    ADD CONSTRAINT paused_kinds_pkey PRIMARY KEY (kind);


--
-- Name: jobs payload_bounded; Type: CHECK CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE queue.jobs
    ADD CONSTRAINT payload_bounded CHECK (((octet_length((payload)::text) <= 65536) AND (NOT jsonb_path_exists(payload, 'strict $.**{32}'::jsonpath)))) NOT VALID;


--
-- Name: CONSTRAINT payload_bounded ON jobs; Type: COMMENT; Schema: queue; Owner: -
--

COMMENT ON CONSTRAINT payload_bounded ON queue.jobs IS 'a job payload is at most 64 KiB of JSON text and nested at most 31 levels deep';


--
-- Name: periodic_hooks periodic_hooks_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.periodic_hooks
    ADD CONSTRAINT periodic_hooks_pkey PRIMARY KEY (item);


--
-- Name: jobs priority_bounded; Type: CHECK CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE queue.jobs
    ADD CONSTRAINT priority_bounded CHECK (((priority >= '-100'::integer) AND (priority <= 100))) NOT VALID;


--
-- Name: rate_limiters rate_limiters_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.rate_limiters
    ADD CONSTRAINT rate_limiters_pkey PRIMARY KEY (key);


--
-- Name: reruns reruns_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.reruns
    ADD CONSTRAINT reruns_pkey PRIMARY KEY (job_id);


--
-- Name: schedules schedules_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.schedules
    ADD CONSTRAINT schedules_pkey PRIMARY KEY (name);


--
-- Name: workers workers_pkey; Type: CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.workers
    ADD CONSTRAINT workers_pkey PRIMARY KEY (worker_id);


--
-- Name: document_chunks_embedding_hnsw; Type: INDEX; Schema: app; Owner: -
--

CREATE INDEX document_chunks_embedding_hnsw ON app.document_chunks USING hnsw (embedding public.vector_cosine_ops) WHERE (embedding IS NOT NULL);


--
-- Name: questions_course; Type: INDEX; Schema: app; Owner: -
--

CREATE INDEX questions_course ON app.questions USING btree (course_id) WHERE (deleted_at IS NULL);


--
-- Name: questions_embedding_hnsw; Type: INDEX; Schema: app; Owner: -
--

CREATE INDEX questions_embedding_hnsw ON app.questions USING hnsw (embedding public.vector_cosine_ops) WHERE ((deleted_at IS NULL) AND (embedding IS NOT NULL));


--
-- Name: attempts_claim; Type: INDEX; Schema: queue; Owner: -
--

CREATE UNIQUE INDEX attempts_claim ON queue.attempts USING btree (job_id, claim_xid);


--
-- Name: jobs_claim; Type: INDEX; Schema: queue; Owner: -
--

CREATE INDEX jobs_claim ON queue.jobs USING btree (kind, priority DESC, run_at, id) WHERE (status = 'pending'::text);


--
-- Name: jobs_failed; Type: INDEX; Schema: queue; Owner: -
--

CREATE INDEX jobs_failed ON queue.jobs USING btree (kind, error_code) WHERE (status = 'failed'::text);


--
-- Name: jobs_failed_at; Type: INDEX; Schema: queue; Owner: -
--

CREATE INDEX jobs_failed_at ON queue.jobs USING btree (completed_at DESC, id DESC) WHERE (status = 'failed'::text);


--
-- Name: jobs_finished_at; Type: INDEX; Schema: queue; Owner: -
--

CREATE INDEX jobs_finished_at ON queue.jobs USING btree (completed_at) WHERE (completed_at IS NOT NULL);


--
-- Name: jobs_one_active; Type: INDEX; Schema: queue; Owner: -
--

CREATE UNIQUE INDEX jobs_one_active ON queue.jobs USING btree (kind, subject) WHERE (status = ANY (ARRAY['pending'::text, 'running'::text]));


--
-- Name: jobs_status_kind_id; Type: INDEX; Schema: queue; Owner: -
--

CREATE INDEX jobs_status_kind_id ON queue.jobs USING btree (status, kind, id);


--
-- Name: jobs_subject; Type: INDEX; Schema: queue; Owner: -
--

CREATE INDEX jobs_subject ON queue.jobs USING btree (kind, subject, id DESC);


--
-- Name: model_calls_created; Type: INDEX; Schema: queue; Owner: -
--

CREATE INDEX model_calls_created ON queue.model_calls USING btree (created_at);


--
-- Name: model_calls_job; Type: INDEX; Schema: queue; Owner: -
--

CREATE INDEX model_calls_job ON queue.model_calls USING btree (job_id);


--
-- Name: rate_events_key_at; Type: INDEX; Schema: queue; Owner: -
--

CREATE INDEX rate_events_key_at ON queue.rate_events USING btree (key, at);


--
-- Name: document_chunks chunks_embedding_enqueue_on_edit; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER chunks_embedding_enqueue_on_edit AFTER UPDATE OF content ON app.document_chunks FOR EACH ROW WHEN ((old.content IS DISTINCT FROM new.content)) EXECUTE FUNCTION app.chunks_enqueue_embedding();


--
-- Name: document_chunks chunks_embedding_enqueue_on_insert; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER chunks_embedding_enqueue_on_insert AFTER INSERT ON app.document_chunks FOR EACH ROW EXECUTE FUNCTION app.chunks_enqueue_embedding();


--
-- Name: document_chunks chunks_embedding_on_edit; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER chunks_embedding_on_edit BEFORE UPDATE OF content ON app.document_chunks FOR EACH ROW WHEN ((old.content IS DISTINCT FROM new.content)) EXECUTE FUNCTION app.chunks_embedding_status();


--
-- Name: document_chunks chunks_embedding_on_insert; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER chunks_embedding_on_insert BEFORE INSERT ON app.document_chunks FOR EACH ROW EXECUTE FUNCTION app.chunks_embedding_status();


--
-- Name: questions questions_embedding_enqueue_on_edit; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER questions_embedding_enqueue_on_edit AFTER UPDATE OF question_text, choice_1, choice_2, choice_3, choice_4 ON app.questions FOR EACH ROW WHEN (((old.question_text IS DISTINCT FROM new.question_text) OR (old.choice_1 IS DISTINCT FROM new.choice_1) OR (old.choice_2 IS DISTINCT FROM new.choice_2) OR (old.choice_3 IS DISTINCT FROM new.choice_3) OR (old.choice_4 IS DISTINCT FROM new.choice_4))) EXECUTE FUNCTION app.questions_enqueue_embedding();


--
-- Name: questions questions_embedding_enqueue_on_insert; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER questions_embedding_enqueue_on_insert AFTER INSERT ON app.questions FOR EACH ROW EXECUTE FUNCTION app.questions_enqueue_embedding();


--
-- Name: questions questions_embedding_on_edit; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER questions_embedding_on_edit BEFORE UPDATE OF question_text, choice_1, choice_2, choice_3, choice_4 ON app.questions FOR EACH ROW WHEN (((old.question_text IS DISTINCT FROM new.question_text) OR (old.choice_1 IS DISTINCT FROM new.choice_1) OR (old.choice_2 IS DISTINCT FROM new.choice_2) OR (old.choice_3 IS DISTINCT FROM new.choice_3) OR (old.choice_4 IS DISTINCT FROM new.choice_4))) EXECUTE FUNCTION app.questions_embedding_status();


--
-- Name: questions questions_embedding_on_insert; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER questions_embedding_on_insert BEFORE INSERT ON app.questions FOR EACH ROW EXECUTE FUNCTION app.questions_embedding_status();


--
-- Name: questions questions_explanation_on_edit; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER questions_explanation_on_edit BEFORE UPDATE OF question_text, choice_1, choice_2, choice_3, choice_4, correct_choice ON app.questions FOR EACH ROW WHEN (((old.question_text IS DISTINCT FROM new.question_text) OR (old.choice_1 IS DISTINCT FROM new.choice_1) OR (old.choice_2 IS DISTINCT FROM new.choice_2) OR (old.choice_3 IS DISTINCT FROM new.choice_3) OR (old.choice_4 IS DISTINCT FROM new.choice_4) OR (old.correct_choice IS DISTINCT FROM new.correct_choice))) EXECUTE FUNCTION app.questions_explanation_stale();


--
-- Name: quizzes quizzes_explanations_on_graded; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER quizzes_explanations_on_graded AFTER UPDATE OF status ON app.quizzes FOR EACH ROW WHEN (((new.status = 'graded'::text) AND (old.status IS DISTINCT FROM 'graded'::text))) EXECUTE FUNCTION app.quizzes_prefetch_explanations();


--
-- Name: quizzes quizzes_explanations_on_insert_graded; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER quizzes_explanations_on_insert_graded AFTER INSERT ON app.quizzes FOR EACH ROW WHEN ((new.status = 'graded'::text)) EXECUTE FUNCTION app.quizzes_prefetch_explanations();


--
-- Name: quizzes quizzes_weakness_on_graded; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER quizzes_weakness_on_graded AFTER UPDATE OF status ON app.quizzes FOR EACH ROW WHEN (((new.status = 'graded'::text) AND (old.status IS DISTINCT FROM 'graded'::text) AND (new.kind = ANY (ARRAY['quiz'::text, 'mock_exam'::text])))) EXECUTE FUNCTION app.quizzes_enqueue_weakness_analysis();


--
-- Name: quizzes quizzes_weakness_on_insert; Type: TRIGGER; Schema: app; Owner: -
--

CREATE TRIGGER quizzes_weakness_on_insert AFTER INSERT ON app.quizzes FOR EACH ROW WHEN (((new.status = 'graded'::text) AND (new.kind = ANY (ARRAY['quiz'::text, 'mock_exam'::text])))) EXECUTE FUNCTION app.quizzes_enqueue_weakness_analysis();


--
-- Name: jobs jobs_delete_attempts; Type: TRIGGER; Schema: queue; Owner: -
--

CREATE TRIGGER jobs_delete_attempts AFTER DELETE ON queue.jobs REFERENCING OLD TABLE AS deleted_jobs FOR EACH STATEMENT EXECUTE FUNCTION queue.delete_attempts_of_deleted_jobs();


--
-- Name: jobs jobs_notify; Type: TRIGGER; Schema: queue; Owner: -
--

CREATE TRIGGER jobs_notify AFTER INSERT ON queue.jobs REFERENCING NEW TABLE AS new_jobs FOR EACH STATEMENT EXECUTE FUNCTION queue.notify_new_jobs();


--
-- Name: courses courses_user_id_fkey; Type: FK CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.courses
    ADD CONSTRAINT courses_user_id_fkey FOREIGN KEY (user_id) REFERENCES app.users(id);


--
-- Name: document_chunks document_chunks_document_id_fkey; Type: FK CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.document_chunks
    ADD CONSTRAINT document_chunks_document_id_fkey FOREIGN KEY (document_id) REFERENCES app.documents(id);


--
-- Name: documents documents_course_id_fkey; Type: FK CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.documents
    ADD CONSTRAINT documents_course_id_fkey FOREIGN KEY (course_id) REFERENCES app.courses(id);


--
-- Name: questions questions_course_id_fkey; Type: FK CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.questions
    ADD CONSTRAINT questions_course_id_fkey FOREIGN KEY (course_id) REFERENCES app.courses(id);


--
-- Name: quiz_answers quiz_answers_question_id_fkey; Type: FK CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.quiz_answers
    ADD CONSTRAINT quiz_answers_question_id_fkey FOREIGN KEY (question_id) REFERENCES app.questions(id) ON DELETE RESTRICT;


--
-- Name: quiz_answers quiz_answers_quiz_id_fkey; Type: FK CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.quiz_answers
    ADD CONSTRAINT quiz_answers_quiz_id_fkey FOREIGN KEY (quiz_id) REFERENCES app.quizzes(id);


--
-- Name: quizzes quizzes_course_id_fkey; Type: FK CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.quizzes
    ADD CONSTRAINT quizzes_course_id_fkey FOREIGN KEY (course_id) REFERENCES app.courses(id);


--
-- Name: quizzes quizzes_user_id_fkey; Type: FK CONSTRAINT; Schema: app; Owner: -
--

ALTER TABLE ONLY app.quizzes
    ADD CONSTRAINT quizzes_user_id_fkey FOREIGN KEY (user_id) REFERENCES app.users(id);


--
-- Name: model_calls model_calls_attempt_id_fkey; Type: FK CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.model_calls
    ADD CONSTRAINT model_calls_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES queue.attempts(id) ON DELETE SET NULL;


--
-- Name: model_calls model_calls_job_id_fkey; Type: FK CONSTRAINT; Schema: queue; Owner: -
--

ALTER TABLE ONLY queue.model_calls
    ADD CONSTRAINT model_calls_job_id_fkey FOREIGN KEY (job_id) REFERENCES queue.jobs(id) ON DELETE SET NULL;


--
-- Name: SCHEMA app; Type: ACL; Schema: -; Owner: -
--

GRANT USAGE ON SCHEMA app TO llm_worker;
GRANT USAGE ON SCHEMA app TO llm_app;
GRANT USAGE ON SCHEMA app TO llm_operator;
GRANT USAGE ON SCHEMA app TO llm_dashboard;


--
-- Name: SCHEMA queue; Type: ACL; Schema: -; Owner: -
--

GRANT USAGE ON SCHEMA queue TO llm_worker;
GRANT USAGE ON SCHEMA queue TO llm_operator;
GRANT USAGE ON SCHEMA queue TO llm_dashboard;


--
-- Name: FUNCTION answer_is_wrong(p_question_type text, p_is_correct boolean, p_selected_choice smallint, p_correct_choice smallint, p_score numeric, p_max_score numeric); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.answer_is_wrong(p_question_type text, p_is_correct boolean, p_selected_choice smallint, p_correct_choice smallint, p_score numeric, p_max_score numeric) FROM PUBLIC;
GRANT ALL ON FUNCTION app.answer_is_wrong(p_question_type text, p_is_correct boolean, p_selected_choice smallint, p_correct_choice smallint, p_score numeric, p_max_score numeric) TO llm_worker;
GRANT ALL ON FUNCTION app.answer_is_wrong(p_question_type text, p_is_correct boolean, p_selected_choice smallint, p_correct_choice smallint, p_score numeric, p_max_score numeric) TO llm_app;


--
-- Name: FUNCTION backfill_embeddings(p_course_id bigint, p_model text, p_limit integer); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.backfill_embeddings(p_course_id bigint, p_model text, p_limit integer) FROM PUBLIC;
GRANT ALL ON FUNCTION app.backfill_embeddings(p_course_id bigint, p_model text, p_limit integer) TO llm_operator;


--
-- Name: FUNCTION budget(p_name text); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.budget(p_name text) FROM PUBLIC;


--
-- Name: FUNCTION chunks_embedding_status(); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.chunks_embedding_status() FROM PUBLIC;


--
-- Name: FUNCTION chunks_enqueue_embedding(); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.chunks_enqueue_embedding() FROM PUBLIC;


--
-- Name: FUNCTION course_weakness_history(p_course_id bigint); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.course_weakness_history(p_course_id bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION app.course_weakness_history(p_course_id bigint) TO llm_app;
GRANT ALL ON FUNCTION app.course_weakness_history(p_course_id bigint) TO llm_operator;
GRANT ALL ON FUNCTION app.course_weakness_history(p_course_id bigint) TO llm_dashboard;


--
-- Name: FUNCTION duplicate_questions(p_question_id bigint, p_threshold double precision); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.duplicate_questions(p_question_id bigint, p_threshold double precision) FROM PUBLIC;
GRANT ALL ON FUNCTION app.duplicate_questions(p_question_id bigint, p_threshold double precision) TO llm_app;


--
-- Name: FUNCTION embedding_jobs_failed(p_job_ids bigint[]); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.embedding_jobs_failed(p_job_ids bigint[]) FROM PUBLIC;


--
-- Name: FUNCTION embedding_status_after_write(p_inserted boolean, p_status text, p_has_vector boolean); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.embedding_status_after_write(p_inserted boolean, p_status text, p_has_vector boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION app.embedding_status_after_write(p_inserted boolean, p_status text, p_has_vector boolean) TO llm_worker;
GRANT ALL ON FUNCTION app.embedding_status_after_write(p_inserted boolean, p_status text, p_has_vector boolean) TO llm_app;


--
-- Name: FUNCTION explanation_gave_up(p_question_id bigint); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.explanation_gave_up(p_question_id bigint) FROM PUBLIC;


--
-- Name: FUNCTION explanation_jobs_failed(p_job_ids bigint[]); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.explanation_jobs_failed(p_job_ids bigint[]) FROM PUBLIC;


--
-- Name: FUNCTION prefetch_explanations(p_quiz_id bigint, p_limit integer); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.prefetch_explanations(p_quiz_id bigint, p_limit integer) FROM PUBLIC;


--
-- Name: FUNCTION question_content_md5(p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text, p_key smallint); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.question_content_md5(p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text, p_key smallint) FROM PUBLIC;
GRANT ALL ON FUNCTION app.question_content_md5(p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text, p_key smallint) TO llm_worker;
GRANT ALL ON FUNCTION app.question_content_md5(p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text, p_key smallint) TO llm_app;


--
-- Name: FUNCTION question_embedding_text(p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.question_embedding_text(p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text) FROM PUBLIC;
GRANT ALL ON FUNCTION app.question_embedding_text(p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text) TO llm_worker;
GRANT ALL ON FUNCTION app.question_embedding_text(p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text) TO llm_app;


--
-- Name: FUNCTION questions_embedding_status(); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.questions_embedding_status() FROM PUBLIC;


--
-- Name: FUNCTION questions_enqueue_embedding(); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.questions_enqueue_embedding() FROM PUBLIC;


--
-- Name: FUNCTION questions_explanation_stale(); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.questions_explanation_stale() FROM PUBLIC;


--
-- Name: FUNCTION quiz_grading_md5(p_quiz_id bigint); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.quiz_grading_md5(p_quiz_id bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION app.quiz_grading_md5(p_quiz_id bigint) TO llm_worker;
GRANT ALL ON FUNCTION app.quiz_grading_md5(p_quiz_id bigint) TO llm_app;


--
-- Name: FUNCTION quizzes_enqueue_weakness_analysis(); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.quizzes_enqueue_weakness_analysis() FROM PUBLIC;


--
-- Name: FUNCTION quizzes_prefetch_explanations(); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.quizzes_prefetch_explanations() FROM PUBLIC;


--
-- Name: FUNCTION request_explanation(p_question_id bigint, p_regenerate boolean); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.request_explanation(p_question_id bigint, p_regenerate boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION app.request_explanation(p_question_id bigint, p_regenerate boolean) TO llm_app;
GRANT ALL ON FUNCTION app.request_explanation(p_question_id bigint, p_regenerate boolean) TO llm_dashboard;


--
-- Name: FUNCTION request_weakness_analysis(p_quiz_id bigint); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.request_weakness_analysis(p_quiz_id bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION app.request_weakness_analysis(p_quiz_id bigint) TO llm_app;


--
-- Name: FUNCTION retry_failed_embeddings(p_limit integer); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.retry_failed_embeddings(p_limit integer) FROM PUBLIC;


--
-- Name: FUNCTION similar_questions(p_question_id bigint, p_k integer); Type: ACL; Schema: app; Owner: -
--

REVOKE ALL ON FUNCTION app.similar_questions(p_question_id bigint, p_k integer) FROM PUBLIC;
GRANT ALL ON FUNCTION app.similar_questions(p_question_id bigint, p_k integer) TO llm_app;


--
-- Name: FUNCTION apply_reruns(p_job_ids bigint[]); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.apply_reruns(p_job_ids bigint[]) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.apply_reruns(p_job_ids bigint[]) TO llm_worker;


--
-- Name: FUNCTION cancel(p_job_id bigint, p_reason text); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.cancel(p_job_id bigint, p_reason text) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.cancel(p_job_id bigint, p_reason text) TO llm_operator;
GRANT ALL ON FUNCTION queue.cancel(p_job_id bigint, p_reason text) TO llm_dashboard;


--
-- Name: FUNCTION check_receipts(p_xid xid8, p_job_ids bigint[], p_receipts text[]); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.check_receipts(p_xid xid8, p_job_ids bigint[], p_receipts text[]) FROM PUBLIC;


--
-- Name: FUNCTION claim(p_kind text, p_limit integer, p_now timestamp with time zone); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.claim(p_kind text, p_limit integer, p_now timestamp with time zone) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.claim(p_kind text, p_limit integer, p_now timestamp with time zone) TO llm_worker;


--
-- Name: FUNCTION claim_lost(jobs integer, expected_jobs integer, attempts integer, expected_attempts integer); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.claim_lost(jobs integer, expected_jobs integer, attempts integer, expected_attempts integer) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.claim_lost(jobs integer, expected_jobs integer, attempts integer, expected_attempts integer) TO llm_worker;


--
-- Name: FUNCTION claim_receipt(p_xid xid8, p_job_id bigint); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.claim_receipt(p_xid xid8, p_job_id bigint) FROM PUBLIC;


--
-- Name: FUNCTION cron_field(p_field text, p_lo integer, p_hi integer, p_what text); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.cron_field(p_field text, p_lo integer, p_hi integer, p_what text) FROM PUBLIC;


--
-- Name: FUNCTION cron_latest(p_cron text, p_after timestamp with time zone, p_now timestamp with time zone); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.cron_latest(p_cron text, p_after timestamp with time zone, p_now timestamp with time zone) FROM PUBLIC;


--
-- Name: FUNCTION delete_attempts_of_deleted_jobs(); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.delete_attempts_of_deleted_jobs() FROM PUBLIC;


--
-- Name: FUNCTION enqueue(p_kind text, p_subject text, p_payload jsonb, p_priority smallint, p_run_at timestamp with time zone, p_max_attempts integer); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.enqueue(p_kind text, p_subject text, p_payload jsonb, p_priority smallint, p_run_at timestamp with time zone, p_max_attempts integer) FROM PUBLIC;


--
-- Name: FUNCTION fail_unknown_kinds(p_grace interval); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.fail_unknown_kinds(p_grace interval) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.fail_unknown_kinds(p_grace interval) TO llm_worker;


--
-- Name: FUNCTION finish_jobs(p_worker_id text, p_job_ids bigint[], p_receipts text[], p_attempt_ids bigint[], p_attempts integer[], p_statuses text[], p_outcomes text[], p_error_codes text[], p_error_messages text[], p_retry_in double precision[], p_results jsonb[]); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.finish_jobs(p_worker_id text, p_job_ids bigint[], p_receipts text[], p_attempt_ids bigint[], p_attempts integer[], p_statuses text[], p_outcomes text[], p_error_codes text[], p_error_messages text[], p_retry_in double precision[], p_results jsonb[]) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.finish_jobs(p_worker_id text, p_job_ids bigint[], p_receipts text[], p_attempt_ids bigint[], p_attempts integer[], p_statuses text[], p_outcomes text[], p_error_codes text[], p_error_messages text[], p_retry_in double precision[], p_results jsonb[]) TO llm_worker;


--
-- Name: FUNCTION fire_schedules(); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.fire_schedules() FROM PUBLIC;
GRANT ALL ON FUNCTION queue.fire_schedules() TO llm_worker;


--
-- Name: FUNCTION fire_schedules(p_now timestamp with time zone); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.fire_schedules(p_now timestamp with time zone) FROM PUBLIC;


--
-- Name: FUNCTION is_running(p_job_id bigint); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.is_running(p_job_id bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.is_running(p_job_id bigint) TO llm_operator;
GRANT ALL ON FUNCTION queue.is_running(p_job_id bigint) TO llm_dashboard;


--
-- Name: FUNCTION maintenance(p_every interval, p_completed interval, p_failed interval, p_calls interval, p_batch integer, p_retry_cap integer); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.maintenance(p_every interval, p_completed interval, p_failed interval, p_calls interval, p_batch integer, p_retry_cap integer) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.maintenance(p_every interval, p_completed interval, p_failed interval, p_calls interval, p_batch integer, p_retry_cap integer) TO llm_worker;


--
-- Name: FUNCTION notify_new_jobs(); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.notify_new_jobs() FROM PUBLIC;


--
-- Name: FUNCTION pause(p_kind text, p_reason text); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.pause(p_kind text, p_reason text) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.pause(p_kind text, p_reason text) TO llm_operator;
GRANT ALL ON FUNCTION queue.pause(p_kind text, p_reason text) TO llm_dashboard;


--
-- Name: FUNCTION prune(p_completed interval, p_failed interval, p_calls interval, p_batch integer, p_dry_run boolean); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.prune(p_completed interval, p_failed interval, p_calls interval, p_batch integer, p_dry_run boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.prune(p_completed interval, p_failed interval, p_calls interval, p_batch integer, p_dry_run boolean) TO llm_operator;


--
-- Name: FUNCTION rate_block(p_key text, p_seconds double precision); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.rate_block(p_key text, p_seconds double precision) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.rate_block(p_key text, p_seconds double precision) TO llm_worker;


--
-- Name: FUNCTION rate_take(p_key text, p_requests integer, p_tokens_max integer, p_window double precision, p_tokens integer); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.rate_take(p_key text, p_requests integer, p_tokens_max integer, p_window double precision, p_tokens integer) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.rate_take(p_key text, p_requests integer, p_tokens_max integer, p_window double precision, p_tokens integer) TO llm_worker;


--
-- Name: FUNCTION record_attempts(p_job_ids bigint[], p_receipts text[], p_claim_xid xid8, p_worker_id text); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.record_attempts(p_job_ids bigint[], p_receipts text[], p_claim_xid xid8, p_worker_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.record_attempts(p_job_ids bigint[], p_receipts text[], p_claim_xid xid8, p_worker_id text) TO llm_worker;


--
-- Name: FUNCTION release_attempts(p_attempt_ids bigint[], p_receipts text[]); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.release_attempts(p_attempt_ids bigint[], p_receipts text[]) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.release_attempts(p_attempt_ids bigint[], p_receipts text[]) TO llm_worker;


--
-- Name: FUNCTION requeue(p_job_id bigint); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.requeue(p_job_id bigint) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.requeue(p_job_id bigint) TO llm_operator;
GRANT ALL ON FUNCTION queue.requeue(p_job_id bigint) TO llm_dashboard;


--
-- Name: FUNCTION requeue_failed(p_kind text, p_error_code text, p_older_than interval, p_since timestamp with time zone); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.requeue_failed(p_kind text, p_error_code text, p_older_than interval, p_since timestamp with time zone) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.requeue_failed(p_kind text, p_error_code text, p_older_than interval, p_since timestamp with time zone) TO llm_operator;


--
-- Name: FUNCTION requeue_job(p_job_id bigint, OUT job_id bigint, OUT created boolean); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.requeue_job(p_job_id bigint, OUT job_id bigint, OUT created boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.requeue_job(p_job_id bigint, OUT job_id bigint, OUT created boolean) TO llm_operator;
GRANT ALL ON FUNCTION queue.requeue_job(p_job_id bigint, OUT job_id bigint, OUT created boolean) TO llm_dashboard;


--
-- Name: FUNCTION resume(p_kind text); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.resume(p_kind text) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.resume(p_kind text) TO llm_operator;
GRANT ALL ON FUNCTION queue.resume(p_kind text) TO llm_dashboard;


--
-- Name: FUNCTION schedule(p_name text, p_kind text, p_cron text, p_payload jsonb); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.schedule(p_name text, p_kind text, p_cron text, p_payload jsonb) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.schedule(p_name text, p_kind text, p_cron text, p_payload jsonb) TO llm_operator;


--
-- Name: FUNCTION unschedule(p_name text); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.unschedule(p_name text) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.unschedule(p_name text) TO llm_operator;


--
-- Name: FUNCTION worker_alive(p_worker_id text, p_kinds text[], p_started boolean); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.worker_alive(p_worker_id text, p_kinds text[], p_started boolean) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.worker_alive(p_worker_id text, p_kinds text[], p_started boolean) TO llm_worker;


--
-- Name: FUNCTION worker_stopped(p_worker_id text); Type: ACL; Schema: queue; Owner: -
--

REVOKE ALL ON FUNCTION queue.worker_stopped(p_worker_id text) FROM PUBLIC;
GRANT ALL ON FUNCTION queue.worker_stopped(p_worker_id text) TO llm_worker;


--
-- Name: TABLE budgets; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT,UPDATE ON TABLE app.budgets TO llm_operator;


--
-- Name: TABLE courses; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE app.courses TO llm_app;
GRANT SELECT ON TABLE app.courses TO llm_dashboard;


--
-- Name: COLUMN courses.id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(id) ON TABLE app.courses TO llm_worker;


--
-- Name: COLUMN courses.title; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(title) ON TABLE app.courses TO llm_worker;


--
-- Name: COLUMN courses.course_weakness_analysis; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(course_weakness_analysis),UPDATE(course_weakness_analysis) ON TABLE app.courses TO llm_worker;


--
-- Name: COLUMN courses.updated_at; Type: ACL; Schema: app; Owner: -
--

GRANT UPDATE(updated_at) ON TABLE app.courses TO llm_worker;


--
-- Name: SEQUENCE courses_id_seq; Type: ACL; Schema: app; Owner: -
--

GRANT USAGE ON SEQUENCE app.courses_id_seq TO llm_app;


--
-- Name: TABLE document_chunks; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE app.document_chunks TO llm_app;


--
-- Name: COLUMN document_chunks.id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(id) ON TABLE app.document_chunks TO llm_worker;


--
-- Name: COLUMN document_chunks.document_id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(document_id) ON TABLE app.document_chunks TO llm_worker;


--
-- Name: COLUMN document_chunks.content; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(content) ON TABLE app.document_chunks TO llm_worker;


--
-- Name: COLUMN document_chunks.embedding; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(embedding),UPDATE(embedding) ON TABLE app.document_chunks TO llm_worker;


--
-- Name: COLUMN document_chunks.embedding_status; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(embedding_status),UPDATE(embedding_status) ON TABLE app.document_chunks TO llm_worker;


--
-- Name: COLUMN document_chunks.embedding_updated_at; Type: ACL; Schema: app; Owner: -
--

GRANT UPDATE(embedding_updated_at) ON TABLE app.document_chunks TO llm_worker;


--
-- Name: COLUMN document_chunks.embedding_model; Type: ACL; Schema: app; Owner: -
--

GRANT UPDATE(embedding_model) ON TABLE app.document_chunks TO llm_worker;


--
-- Name: SEQUENCE document_chunks_id_seq; Type: ACL; Schema: app; Owner: -
--

GRANT USAGE ON SEQUENCE app.document_chunks_id_seq TO llm_app;


--
-- Name: TABLE documents; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE app.documents TO llm_app;


--
-- Name: COLUMN documents.id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(id) ON TABLE app.documents TO llm_worker;


--
-- Name: COLUMN documents.course_id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(course_id) ON TABLE app.documents TO llm_worker;


--
-- Name: COLUMN documents.title; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(title) ON TABLE app.documents TO llm_worker;


--
-- Name: COLUMN documents.ai_summary; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(ai_summary) ON TABLE app.documents TO llm_worker;


--
-- Name: COLUMN documents.deleted_at; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(deleted_at) ON TABLE app.documents TO llm_worker;


--
-- Name: SEQUENCE documents_id_seq; Type: ACL; Schema: app; Owner: -
--

GRANT USAGE ON SEQUENCE app.documents_id_seq TO llm_app;


--
-- Name: TABLE questions; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE app.questions TO llm_app;
GRANT SELECT ON TABLE app.questions TO llm_dashboard;


--
-- Name: COLUMN questions.id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(id) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.course_id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(course_id) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.question_type; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(question_type) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.question_text; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(question_text) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.choice_1; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(choice_1) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.choice_2; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(choice_2) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.choice_3; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(choice_3) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.choice_4; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(choice_4) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.correct_choice; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(correct_choice) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.reference_answer; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(reference_answer) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.max_score; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(max_score) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.explanation; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(explanation) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.subject; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(subject) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.scope; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(scope) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.is_active; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(is_active) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.deleted_at; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(deleted_at) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.ai_explanation; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(ai_explanation),UPDATE(ai_explanation) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.ai_explanation_status; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(ai_explanation_status),UPDATE(ai_explanation_status) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.ai_explanation_generated_at; Type: ACL; Schema: app; Owner: -
--

GRANT UPDATE(ai_explanation_generated_at) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.ai_explanation_model; Type: ACL; Schema: app; Owner: -
--

GRANT UPDATE(ai_explanation_model) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.embedding; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(embedding),UPDATE(embedding) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.embedding_status; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(embedding_status),UPDATE(embedding_status) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.embedding_updated_at; Type: ACL; Schema: app; Owner: -
--

GRANT UPDATE(embedding_updated_at) ON TABLE app.questions TO llm_worker;


--
-- Name: COLUMN questions.embedding_model; Type: ACL; Schema: app; Owner: -
--

GRANT UPDATE(embedding_model) ON TABLE app.questions TO llm_worker;


--
-- Name: SEQUENCE questions_id_seq; Type: ACL; Schema: app; Owner: -
--

GRANT USAGE ON SEQUENCE app.questions_id_seq TO llm_app;


--
-- Name: TABLE quiz_answers; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE app.quiz_answers TO llm_app;


--
-- Name: COLUMN quiz_answers.id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(id) ON TABLE app.quiz_answers TO llm_worker;


--
-- Name: COLUMN quiz_answers.quiz_id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(quiz_id) ON TABLE app.quiz_answers TO llm_worker;


--
-- Name: COLUMN quiz_answers.question_id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(question_id) ON TABLE app.quiz_answers TO llm_worker;


--
-- Name: COLUMN quiz_answers.selected_choice; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(selected_choice) ON TABLE app.quiz_answers TO llm_worker;


--
-- Name: COLUMN quiz_answers.answer_text; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(answer_text) ON TABLE app.quiz_answers TO llm_worker;


--
-- Name: COLUMN quiz_answers.is_correct; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(is_correct) ON TABLE app.quiz_answers TO llm_worker;


--
-- Name: COLUMN quiz_answers.unsure; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(unsure) ON TABLE app.quiz_answers TO llm_worker;


--
-- Name: COLUMN quiz_answers.score; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(score) ON TABLE app.quiz_answers TO llm_worker;


--
-- Name: COLUMN quiz_answers.max_score; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(max_score) ON TABLE app.quiz_answers TO llm_worker;


--
-- Name: SEQUENCE quiz_answers_id_seq; Type: ACL; Schema: app; Owner: -
--

GRANT USAGE ON SEQUENCE app.quiz_answers_id_seq TO llm_app;


--
-- Name: TABLE quizzes; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE app.quizzes TO llm_app;


--
-- Name: COLUMN quizzes.id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(id) ON TABLE app.quizzes TO llm_worker;


--
-- Name: COLUMN quizzes.course_id; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(course_id) ON TABLE app.quizzes TO llm_worker;


--
-- Name: COLUMN quizzes.kind; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(kind) ON TABLE app.quizzes TO llm_worker;


--
-- Name: COLUMN quizzes.title; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(title) ON TABLE app.quizzes TO llm_worker;


--
-- Name: COLUMN quizzes.status; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(status) ON TABLE app.quizzes TO llm_worker;


--
-- Name: COLUMN quizzes.graded_at; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT(graded_at) ON TABLE app.quizzes TO llm_worker;


--
-- Name: SEQUENCE quizzes_id_seq; Type: ACL; Schema: app; Owner: -
--

GRANT USAGE ON SEQUENCE app.quizzes_id_seq TO llm_app;


--
-- Name: TABLE users; Type: ACL; Schema: app; Owner: -
--

GRANT SELECT,INSERT,DELETE,UPDATE ON TABLE app.users TO llm_app;


--
-- Name: SEQUENCE users_id_seq; Type: ACL; Schema: app; Owner: -
--

GRANT USAGE ON SEQUENCE app.users_id_seq TO llm_app;


--
-- Name: TABLE attempts; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.attempts TO llm_worker;
GRANT SELECT ON TABLE queue.attempts TO llm_operator;
GRANT SELECT ON TABLE queue.attempts TO llm_dashboard;


--
-- Name: SEQUENCE attempts_id_seq; Type: ACL; Schema: queue; Owner: -
--

GRANT USAGE ON SEQUENCE queue.attempts_id_seq TO llm_operator;


--
-- Name: TABLE failure_hooks; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.failure_hooks TO llm_worker;
GRANT SELECT ON TABLE queue.failure_hooks TO llm_operator;


--
-- Name: TABLE jobs; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.jobs TO llm_worker;
GRANT SELECT,INSERT,UPDATE ON TABLE queue.jobs TO llm_operator;
GRANT SELECT,INSERT,UPDATE ON TABLE queue.jobs TO llm_dashboard;


--
-- Name: TABLE job_states; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.job_states TO llm_worker;
GRANT SELECT ON TABLE queue.job_states TO llm_operator;
GRANT SELECT ON TABLE queue.job_states TO llm_dashboard;


--
-- Name: SEQUENCE jobs_id_seq; Type: ACL; Schema: queue; Owner: -
--

GRANT USAGE ON SEQUENCE queue.jobs_id_seq TO llm_operator;
GRANT USAGE ON SEQUENCE queue.jobs_id_seq TO llm_dashboard;


--
-- Name: TABLE kinds_seen; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.kinds_seen TO llm_worker;
GRANT SELECT ON TABLE queue.kinds_seen TO llm_operator;
GRANT SELECT ON TABLE queue.kinds_seen TO llm_dashboard;


--
-- Name: TABLE maintenance_runs; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.maintenance_runs TO llm_worker;
GRANT SELECT ON TABLE queue.maintenance_runs TO llm_operator;


--
-- Name: TABLE migrations; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.migrations TO llm_worker;
GRANT SELECT ON TABLE queue.migrations TO llm_operator;


--
-- Name: TABLE model_calls; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT,INSERT ON TABLE queue.model_calls TO llm_worker;
GRANT SELECT ON TABLE queue.model_calls TO llm_operator;
GRANT SELECT ON TABLE queue.model_calls TO llm_dashboard;


--
-- Name: SEQUENCE model_calls_id_seq; Type: ACL; Schema: queue; Owner: -
--

GRANT USAGE ON SEQUENCE queue.model_calls_id_seq TO llm_operator;


--
-- Name: TABLE model_usage_rollup; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.model_usage_rollup TO llm_worker;
GRANT SELECT ON TABLE queue.model_usage_rollup TO llm_operator;
GRANT SELECT ON TABLE queue.model_usage_rollup TO llm_dashboard;


--
-- Name: TABLE model_usage_daily; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.model_usage_daily TO llm_worker;
GRANT SELECT ON TABLE queue.model_usage_daily TO llm_operator;
GRANT SELECT ON TABLE queue.model_usage_daily TO llm_dashboard;


--
-- Name: TABLE model_usage_per_job; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.model_usage_per_job TO llm_worker;
GRANT SELECT ON TABLE queue.model_usage_per_job TO llm_operator;
GRANT SELECT ON TABLE queue.model_usage_per_job TO llm_dashboard;


--
-- Name: TABLE paused_kinds; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.paused_kinds TO llm_worker;
GRANT SELECT ON TABLE queue.paused_kinds TO llm_operator;
GRANT SELECT ON TABLE queue.paused_kinds TO llm_dashboard;


--
-- Name: TABLE periodic_hooks; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.periodic_hooks TO llm_worker;
GRANT SELECT ON TABLE queue.periodic_hooks TO llm_operator;


--
-- Name: TABLE rate_limiters; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.rate_limiters TO llm_worker;
GRANT SELECT ON TABLE queue.rate_limiters TO llm_operator;


--
-- Name: TABLE reruns; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.reruns TO llm_worker;
GRANT SELECT ON TABLE queue.reruns TO llm_operator;


--
-- Name: TABLE schedules; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.schedules TO llm_worker;
GRANT SELECT ON TABLE queue.schedules TO llm_operator;


--
-- Name: TABLE stats; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.stats TO llm_worker;
GRANT SELECT ON TABLE queue.stats TO llm_operator;
GRANT SELECT ON TABLE queue.stats TO llm_dashboard;


--
-- Name: TABLE workers; Type: ACL; Schema: queue; Owner: -
--

GRANT SELECT ON TABLE queue.workers TO llm_worker;
GRANT SELECT ON TABLE queue.workers TO llm_operator;
GRANT SELECT ON TABLE queue.workers TO llm_dashboard;


--
-- PostgreSQL database dump complete
--


