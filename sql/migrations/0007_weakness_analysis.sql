-- Course weakness analysis: the trigger that enqueues one analysis when a quiz or mock exam
-- becomes graded, the rule for which answers are wrong, operator helpers, and the grants.
--
-- The job (worker/kinds/weakness.py) reads only the newly graded quiz's wrong answers and
-- merges its analysis into app.courses.course_weakness_analysis (docs/weakness_analysis.md).

-- Which answers count as wrong, in one place for the worker and for operators:
--   multiple choice: is_correct false; where the grader left is_correct NULL, a choice
--     other than the key (a blank answer included) is wrong;
--   descriptive: a score below the maximum; where either is missing, is_correct false.
-- An unsure answer that was right is not wrong (explanations cover those, not this job).
CREATE FUNCTION app.answer_is_wrong(
    p_question_type   text,
    p_is_correct      boolean,
    p_selected_choice smallint,
    p_correct_choice  smallint,
    p_score           numeric,
    p_max_score       numeric
) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
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

-- One job per quiz (subject quiz:<id>); a quiz whose analysis is still pending or running
-- gets no second job, and a later regrade after it finished gets a new one.
CREATE FUNCTION app.quizzes_enqueue_weakness_analysis() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM queue.enqueue('weakness_analysis', 'quiz:' || NEW.id,
                          jsonb_build_object('quiz_id', NEW.id, 'course_id', NEW.course_id));
    RETURN NULL;
END;
$$;

CREATE TRIGGER quizzes_weakness_on_insert AFTER INSERT ON app.quizzes
    FOR EACH ROW
    WHEN (NEW.status = 'graded' AND NEW.kind IN ('quiz', 'mock_exam'))
    EXECUTE FUNCTION app.quizzes_enqueue_weakness_analysis();
-- Only a change *to* graded: setting graded again on a graded quiz enqueues nothing.
CREATE TRIGGER quizzes_weakness_on_graded AFTER UPDATE OF status ON app.quizzes
    FOR EACH ROW
    WHEN (NEW.status = 'graded' AND OLD.status IS DISTINCT FROM 'graded'
          AND NEW.kind IN ('quiz', 'mock_exam'))
    EXECUTE FUNCTION app.quizzes_enqueue_weakness_analysis();

-- Ask for an analysis by hand (after a prompt change, or to redo a quiz). Refused for a quiz
-- that does not exist or is not graded. Returns the id of the job that will run: the active
-- one if the quiz already has one.
CREATE FUNCTION app.request_weakness_analysis(p_quiz_id bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
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

-- The stored history of a course's analysis, one row per contributing analysis, oldest
-- first (source 'legacy' is an analysis stored before the history existed).
CREATE FUNCTION app.course_weakness_history(p_course_id bigint)
RETURNS TABLE (
    entry             integer,
    source            text,
    quiz_id           bigint,
    job_id            bigint,
    analyzed_at       text,
    prompt_version    integer,
    model             text,
    wrong_answers     integer,
    weaknesses        jsonb,
    suggestions       jsonb,
    superseded_by_job bigint
)
LANGUAGE sql STABLE AS $$
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

-- What the worker reads and writes for the analysis, and nothing more. Locking the course
-- row (SELECT … FOR UPDATE) needs the UPDATE privilege it has on these two columns.
GRANT SELECT (id, course_id, kind, title, status, graded_at) ON app.quizzes TO llm_worker;
GRANT SELECT (id, quiz_id, question_id, selected_choice, answer_text, is_correct, unsure,
              score, max_score)
    ON app.quiz_answers TO llm_worker;
GRANT SELECT (id, question_type, question_text, choice_1, choice_2, choice_3, choice_4,
              correct_choice, reference_answer, max_score, explanation, subject, scope,
              deleted_at)
    ON app.questions TO llm_worker;
GRANT SELECT (id, title, course_weakness_analysis) ON app.courses TO llm_worker;
GRANT UPDATE (course_weakness_analysis, updated_at) ON app.courses TO llm_worker;
