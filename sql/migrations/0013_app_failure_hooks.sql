-- What a job of the app's kinds failed by the unknown-kind sweep (no live worker ran it) leaves
-- behind: the row it was for goes from `pending` to `failed`, as the kinds' own final-failure
-- hooks do in the worker, so prefetch and app.request_explanation can ask for it again.
-- A payload that does not name a row is left alone (the CASE keeps the cast from failing).

CREATE FUNCTION app.explanation_jobs_failed(p_job_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
    UPDATE app.questions x
    SET ai_explanation_status = 'failed'
    FROM queue.jobs j
    WHERE j.id = ANY(p_job_ids)
      AND x.id = CASE WHEN j.payload ->> 'question_id' ~ '^[0-9]{1,18}$'
                      THEN (j.payload ->> 'question_id')::bigint END
      AND x.ai_explanation_status = 'pending';
$$;

CREATE FUNCTION app.embedding_jobs_failed(p_job_ids bigint[]) RETURNS void
LANGUAGE sql AS $$
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
$$;

INSERT INTO queue.failure_hooks (kind, hook) VALUES
    ('explanation', 'app.explanation_jobs_failed'),
    ('embedding', 'app.embedding_jobs_failed');
