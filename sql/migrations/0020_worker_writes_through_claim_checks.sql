-- The worker changes the queue only through functions that check its claim.
--
-- Until now `llm_worker` held UPDATE on queue.jobs and queue.attempts (a claim's
-- SELECT … FOR NO KEY UPDATE needs it) and every right on the registry tables, so any login
-- of it could cancel, park, complete or release jobs it never claimed and keep a ghost
-- worker alive for ever. Those rights go. In their place:
--
--   queue.claim            locks due jobs for the calling transaction and hands back, per
--                          job, a receipt: a hash of a server secret, the transaction's xid
--                          and the job id. Only the claim function can make one.
--   queue.record_attempts  (bookkeeping connection) counts an attempt per job, given the
--                          claim's xid and its receipts;
--   queue.finish_jobs      (the claiming transaction) writes the outcomes, given receipts
--                          that name the calling transaction's own xid;
--   queue.release_attempts gives back open attempts, given their claim's receipts;
--   queue.worker_alive / worker_stopped touch only the registry rows of the calling login,
--                          with the server's clock;
--   queue.fail_unknown_kinds takes a grace of at least a minute.
--
-- All run with their owner's rights (SECURITY DEFINER) and a search path no caller can
-- bend. The worker keeps SELECT on the queue's tables and INSERT on queue.model_calls (its
-- own spend; it can change or remove no row there).

CREATE TABLE queue.claim_secret (secret text NOT NULL);
REVOKE ALL ON queue.claim_secret FROM PUBLIC;
INSERT INTO queue.claim_secret (secret)
SELECT encode(sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text
                                || clock_timestamp()::text, 'UTF8')), 'hex');

COMMENT ON TABLE queue.claim_secret IS
    'The key of claim receipts; readable by the owner of the queue functions only.';

-- The receipt of one job claimed by one transaction. The message has a fixed shape
-- (digits only after the secret), and the hash is taken twice, HMAC-like.
CREATE FUNCTION queue.claim_receipt(p_xid xid8, p_job_id bigint) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT encode(sha256(convert_to(s.secret, 'UTF8') || sha256(convert_to(
               s.secret || '/' || p_xid::text || '/' || p_job_id::text, 'UTF8'))), 'hex')
    FROM queue.claim_secret s;
$$;

-- Raise (42501) unless every job comes with the receipt of its claim by p_xid.
CREATE FUNCTION queue.check_receipts(p_xid xid8, p_job_ids bigint[], p_receipts text[])
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
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

-- The claim: due pending jobs of one kind, locked for the calling transaction, which stays
-- open while the handlers run. The payload comes as text (the worker decodes each job's
-- alone). Due means run_at <= p_now; NULL means the server's now() (a test passes a later
-- time instead of waiting).
CREATE FUNCTION queue.claim(p_kind text, p_limit integer, p_now timestamptz)
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
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT least(greatest(p_limit, 0), 1000)
    FOR NO KEY UPDATE OF j SKIP LOCKED;
$$;

-- The bookkeeping connection's insert, committed before any handler runs (its own
-- transaction, so p_claim_xid names the claim's). Counts earlier attempts, except those
-- released on a graceful shutdown, those deferred by a budget, and the first three
-- superseded because the job's input changed; a job that used all of them gets no new attempt and is failed by the caller.
-- Idempotent per claim: if a first try committed but its reply was lost, the retry finds
-- the rows it made instead of counting the attempts twice.
CREATE FUNCTION queue.record_attempts(p_job_ids bigint[], p_receipts text[],
                                      p_claim_xid xid8, p_worker_id text)
RETURNS TABLE (job_id bigint, prior integer, attempt_id bigint, attempt integer,
               last_outcome text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT queue.check_receipts(p_claim_xid, p_job_ids, p_receipts);
    WITH j AS (
        SELECT x.id, x.max_attempts,
               (SELECT count(*) FILTER (WHERE a.outcome IS DISTINCT FROM 'superseded')
                       + greatest(count(*) FILTER (WHERE a.outcome = 'superseded') - 3, 0)
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

-- Every claimed job's outcome, written in the claiming transaction right before COMMIT.
-- Receipts first: each job must be this transaction's claim. Then the ownership fence: a
-- job row is changed only while still pending, an attempt row only when this very
-- transaction claimed it; if either count falls short it raises (queue.claim_lost, SQLSTATE
-- LW001), so the COMMIT sent behind it in the same round trip rolls everything back.
-- Attempts of these jobs left open by workers that died are closed as worker_lost.
CREATE FUNCTION queue.finish_jobs(
    p_worker_id text, p_job_ids bigint[], p_receipts text[], p_attempt_ids bigint[],
    p_attempts integer[], p_statuses text[], p_outcomes text[], p_error_codes text[],
    p_error_messages text[], p_retry_in float8[], p_results jsonb[])
RETURNS TABLE (jobs integer, attempts integer, lost integer, fence integer)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

-- Open attempts given back, so they do not count: on a graceful shutdown, by the claiming
-- transaction itself (jobs it did not start) or by the bookkeeping connection right before
-- the claim rolls back. Each attempt comes with its claim's receipt for its job.
CREATE FUNCTION queue.release_attempts(p_attempt_ids bigint[], p_receipts text[])
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

-- The registry: a row belongs to the login that registered it.
ALTER TABLE queue.workers ADD COLUMN login name NOT NULL DEFAULT session_user;

CREATE OR REPLACE FUNCTION queue.worker_alive(p_worker_id text, p_kinds text[],
                                              p_started boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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

CREATE OR REPLACE FUNCTION queue.worker_stopped(p_worker_id text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO queue.kinds_seen (kind, last_seen_at)
    SELECT DISTINCT k, now() FROM queue.workers w, unnest(w.kinds) AS k
    WHERE w.worker_id = p_worker_id AND w.login = session_user
    ON CONFLICT (kind) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at;
    DELETE FROM queue.workers WHERE worker_id = p_worker_id AND login = session_user;
$$;

-- The unknown-kind sweep, with the grace the caller asks for but never under a minute, and
-- the liveness window fixed (a caller choosing both could fail every kind's jobs at once).
DROP FUNCTION queue.fail_unknown_kinds(interval, interval);
CREATE FUNCTION queue.fail_unknown_kinds(p_grace interval DEFAULT interval '10 minutes')
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

-- Rights: the functions above, and no more write rights on the queue's rows.
REVOKE ALL ON FUNCTION queue.claim_receipt(xid8, bigint), queue.check_receipts(xid8, bigint[], text[]),
    queue.claim(text, integer, timestamptz),
    queue.record_attempts(bigint[], text[], xid8, text),
    queue.finish_jobs(text, bigint[], text[], bigint[], integer[], text[], text[], text[],
                      text[], float8[], jsonb[]),
    queue.release_attempts(bigint[], text[]), queue.fail_unknown_kinds(interval)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION queue.claim(text, integer, timestamptz),
    queue.record_attempts(bigint[], text[], xid8, text),
    queue.finish_jobs(text, bigint[], text[], bigint[], integer[], text[], text[], text[],
                      text[], float8[], jsonb[]),
    queue.release_attempts(bigint[], text[]), queue.fail_unknown_kinds(interval)
    TO llm_worker;
-- the failure hooks run inside the sweep, with its owner's rights
REVOKE EXECUTE ON FUNCTION app.explanation_jobs_failed(bigint[]),
    app.embedding_jobs_failed(bigint[]) FROM llm_worker;

REVOKE UPDATE ON queue.jobs FROM llm_worker;
REVOKE INSERT, UPDATE ON queue.attempts FROM llm_worker;
REVOKE INSERT, UPDATE, DELETE ON queue.workers FROM llm_worker;
REVOKE INSERT, UPDATE ON queue.kinds_seen FROM llm_worker;
GRANT SELECT ON queue.attempts, queue.workers, queue.kinds_seen TO llm_worker;
