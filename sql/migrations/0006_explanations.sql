-- AI explanations for multiple-choice questions: the cache states, the edit trigger, the
-- prefetch on grading, and app.request_explanation (the manual trigger).

-- An edit of the stem, a choice or the key turns a ready explanation stale; the text is kept
-- (the app shows it as "previous explanation") and is regenerated only on request.
CREATE FUNCTION app.questions_explanation_stale() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.ai_explanation_status = 'ready' THEN
        NEW.ai_explanation_status := 'stale';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER questions_explanation_on_edit
    BEFORE UPDATE OF question_text, choice_1, choice_2, choice_3, choice_4, correct_choice
    ON app.questions
    FOR EACH ROW
    WHEN (OLD.question_text IS DISTINCT FROM NEW.question_text
          OR OLD.choice_1 IS DISTINCT FROM NEW.choice_1
          OR OLD.choice_2 IS DISTINCT FROM NEW.choice_2
          OR OLD.choice_3 IS DISTINCT FROM NEW.choice_3
          OR OLD.choice_4 IS DISTINCT FROM NEW.choice_4
          OR OLD.correct_choice IS DISTINCT FROM NEW.correct_choice)
    EXECUTE FUNCTION app.questions_explanation_stale();

-- A fingerprint of what an explanation is about; the worker writes only if it is unchanged.
CREATE FUNCTION app.question_content_md5(
    p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text, p_key smallint
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT md5(concat_ws(E'\x1f', p_text, p_c1, p_c2, p_c3, p_c4, p_key::text));
$$;

-- The latest explanation job of a question ended in a way that retrying cannot fix.
CREATE FUNCTION app.explanation_gave_up(p_question_id bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((
        SELECT j.error_code IN ('guard_fail', 'evidence_missing')
        FROM queue.jobs j
        WHERE j.kind = 'explanation' AND j.subject = 'question:' || p_question_id
        ORDER BY j.id DESC
        LIMIT 1), false);
$$;

-- Enqueue explanations for a graded quiz's wrong and unsure multiple-choice questions, at
-- most p_limit of them: only those without a usable explanation (none or failed, or no
-- text), and not those whose latest job ended guard_fail or evidence_missing.
-- Returns how many jobs were enqueued.
CREATE FUNCTION app.prefetch_explanations(p_quiz_id bigint, p_limit integer DEFAULT 30)
RETURNS integer
LANGUAGE plpgsql AS $$
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

-- Prefetch is best effort: whatever goes wrong in it, the grading write commits.
CREATE FUNCTION app.quizzes_prefetch_explanations() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM app.prefetch_explanations(NEW.id);
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'explanation prefetch for quiz % failed: %', NEW.id, SQLERRM;
    END;
    RETURN NULL;
END;
$$;

CREATE TRIGGER quizzes_explanations_on_graded AFTER UPDATE OF status ON app.quizzes
    FOR EACH ROW
    WHEN (NEW.status = 'graded' AND OLD.status IS DISTINCT FROM 'graded')
    EXECUTE FUNCTION app.quizzes_prefetch_explanations();
CREATE TRIGGER quizzes_explanations_on_insert_graded AFTER INSERT ON app.quizzes
    FOR EACH ROW WHEN (NEW.status = 'graded')
    EXECUTE FUNCTION app.quizzes_prefetch_explanations();

-- The manual trigger. A ready or stale explanation is returned as it is, without a model
-- call, unless p_regenerate; while one is being generated the call is refused with SQLSTATE
-- 55006 (object_in_use: the app's HTTP 409). Otherwise a job is enqueued (ahead of prefetch
-- jobs) and the status becomes pending. Concurrent calls serialise on the question's row.
CREATE FUNCTION app.request_explanation(p_question_id bigint, p_regenerate boolean DEFAULT false)
RETURNS TABLE (status text, explanation text, is_stale boolean, job_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_q      app.questions;
    v_active bigint;
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
        RAISE EXCEPTION 'an explanation of question % is being generated', p_question_id
            USING ERRCODE = 'object_in_use', HINT = 'ask again when it is ready';
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

-- What the worker reads for explanations and evidence, and the columns it writes.
GRANT SELECT (question_type, correct_choice, explanation, ai_explanation,
              ai_explanation_status)
    ON app.questions TO llm_worker;
GRANT UPDATE (ai_explanation, ai_explanation_status, ai_explanation_generated_at,
              ai_explanation_model)
    ON app.questions TO llm_worker;
GRANT SELECT (title, ai_summary) ON app.documents TO llm_worker;
