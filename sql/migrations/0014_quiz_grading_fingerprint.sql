-- A fingerprint of how a quiz is graded, for the weakness analysis to tell, right before it
-- merges its result, whether the quiz was regraded while the model was thinking (then it
-- stores nothing and runs again for the new grading, like the other kinds' changed input).
-- Every answer's grading fields go into one jsonb array, whose text has no ambiguous
-- separators: no two different gradings share an input to md5.

CREATE FUNCTION app.quiz_grading_md5(p_quiz_id bigint) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT md5(coalesce(jsonb_agg(jsonb_build_array(
                   a.id, a.question_id, a.selected_choice, a.answer_text, a.is_correct,
                   a.unsure, a.score, a.max_score) ORDER BY a.id), '[]'::jsonb)::text)
    FROM app.quiz_answers a
    WHERE a.quiz_id = p_quiz_id;
$$;
