-- Cheaper attempt rows: every job writes one attempt row and updates it, so what each of them
-- costs the server is paid once per job.
--
-- The foreign key to queue.jobs goes. Its check takes FOR KEY SHARE on the job row while the
-- claiming transaction holds that row FOR NO KEY UPDATE, so every attempt insert created a
-- MultiXact (two lockers on one row): measured, a third of the drain rate of short jobs.
-- What it guaranteed stays guaranteed:
--   * an attempt names an existing job: attempts are only inserted by the worker's
--     record_attempts query, which selects the job rows it counts, while the claim holds
--     them locked (a DELETE of a job waits for that lock);
--   * deleting jobs deletes their attempts: the statement trigger below, as the cascade did.
ALTER TABLE queue.attempts DROP CONSTRAINT attempts_job_id_fkey;

CREATE FUNCTION queue.delete_attempts_of_deleted_jobs() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, queue AS $$
BEGIN
    DELETE FROM queue.attempts a USING deleted_jobs d WHERE a.job_id = d.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_delete_attempts
    AFTER DELETE ON queue.jobs
    REFERENCING OLD TABLE AS deleted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION queue.delete_attempts_of_deleted_jobs();

-- Two indexes that repeat attempts_claim (job_id, claim_xid), whose leading column serves
-- every lookup by job. Without attempts_open, closing an attempt (finished_at, outcome,
-- error) changes no indexed column and can be a HOT update.
DROP INDEX queue.attempts_job;
DROP INDEX queue.attempts_open;

-- The ownership fence of finish_jobs, raised inside the statement so the worker can send the
-- COMMIT in the same round trip: if the claim no longer owns every job and attempt it is
-- finishing, the statement fails, the transaction is aborted and its COMMIT rolls back.
CREATE FUNCTION queue.claim_lost(jobs int, expected_jobs int, attempts int,
                                 expected_attempts int) RETURNS int
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'claim no longer owns its jobs: % of % jobs, % of % attempts still its own',
        jobs, expected_jobs, attempts, expected_attempts
        USING ERRCODE = 'LW001', HINT = 'nothing of this claim was written';
END;
$$;
