-- Snoozes: a model server's 429 reschedules the job at its retry-after without using an
-- attempt, for the first 20 snoozes of a job (attempts closed as `snoozed`); past them each
-- one counts, so a server that never lets a job through cannot keep it pending for ever.
-- queue.record_attempts of migration 0020 with that count; the rest is unchanged.
--
-- What record_attempts counts, per job: every earlier attempt except those released on a
-- graceful shutdown and those deferred by a budget, with the first three superseded
-- (changed input) and the first twenty snoozed free.

CREATE OR REPLACE FUNCTION queue.record_attempts(p_job_ids bigint[], p_receipts text[],
                                      p_claim_xid xid8, p_worker_id text)
RETURNS TABLE (job_id bigint, prior integer, attempt_id bigint, attempt integer,
               last_outcome text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
