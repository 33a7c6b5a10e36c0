-- Pausing a kind: an operator holds its jobs without stopping any worker.
--
-- A paused kind is a row of queue.paused_kinds, so the pause outlives restarts. queue.claim
-- returns nothing for it: every worker stops claiming it at its next claim, and jobs already
-- claimed finish. The unknown-kind sweep leaves its backlog alone (the kind is held on
-- purpose, not abandoned). queue.resume notifies the kind's channel, so idle workers claim
-- at once instead of at their next poll.

CREATE TABLE queue.paused_kinds (
    kind      text        PRIMARY KEY CHECK (kind <> ''),
    paused_at timestamptz NOT NULL DEFAULT now(),
    paused_by name        NOT NULL DEFAULT session_user,
    reason    text        CHECK (length(reason) <= 500)
);

COMMENT ON TABLE queue.paused_kinds IS
    'Job kinds no worker claims until queue.resume(kind); written by queue.pause.';

-- True when the kind was not paused yet.
CREATE FUNCTION queue.pause(p_kind text, p_reason text DEFAULT NULL) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO queue.paused_kinds (kind, reason) VALUES (p_kind, left(p_reason, 500))
    ON CONFLICT (kind) DO NOTHING;
    RETURN FOUND;
END;
$$;

-- True when the kind was paused; its workers are woken.
CREATE FUNCTION queue.resume(p_kind text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM queue.paused_kinds WHERE kind = p_kind;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('queue_jobs', p_kind);
    RETURN true;
END;
$$;

-- queue.claim of migration 0020, with nothing to claim while the kind is paused.
CREATE OR REPLACE FUNCTION queue.claim(p_kind text, p_limit integer, p_now timestamptz)
RETURNS TABLE (id bigint, kind text, subject text, payload text, priority smallint,
               max_attempts integer, created_at timestamptz, claim_xid text, receipt text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

-- queue.fail_unknown_kinds of migration 0020, leaving paused kinds alone.
CREATE OR REPLACE FUNCTION queue.fail_unknown_kinds(p_grace interval DEFAULT interval '10 minutes')
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
$$;

REVOKE ALL ON queue.paused_kinds FROM PUBLIC;
GRANT SELECT ON queue.paused_kinds TO llm_worker, llm_operator;
REVOKE ALL ON FUNCTION queue.pause(text, text), queue.resume(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION queue.pause(text, text), queue.resume(text) TO llm_operator;
