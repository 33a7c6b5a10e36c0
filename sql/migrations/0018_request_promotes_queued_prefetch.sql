-- A learner's request never waits behind a queued prefetch. Grading marks the wrong answers'
-- questions `pending` and queues their explanations behind each other; a request for one of
-- them used to be refused (SQLSTATE 55006) until its job ran, minutes later. Now a request
-- for a question whose job is only queued (a prefetch, or a retry waiting out its backoff)
-- raises that job to the manual priority, makes it due now, and returns `pending` with its
-- id. The refusal is kept for a job a worker is running right now: its row is locked by the
-- claim, so the request does not wait for it either (SKIP LOCKED).
CREATE OR REPLACE FUNCTION app.request_explanation(p_question_id bigint,
                                                   p_regenerate boolean DEFAULT false)
RETURNS TABLE (status text, explanation text, is_stale boolean, job_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
