-- The question fingerprint hashes a jsonb array of the fields, whose text has no ambiguous
-- separator: joining the fields with U+001F let ('Q', 'A<US>B') and ('Q<US>A', 'B') share a
-- fingerprint, so text moved across a field boundary during an explanation passed as
-- unchanged. An explanation in flight while this is applied sees its question as edited and
-- runs once more (`superseded`), which costs one model call.
CREATE OR REPLACE FUNCTION app.question_content_md5(
    p_text text, p_c1 text, p_c2 text, p_c3 text, p_c4 text, p_key smallint
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT md5(jsonb_build_array(p_text, p_c1, p_c2, p_c3, p_c4, p_key)::text);
$$;
