-- Cron-style schedules: an operator declares that a kind's job is enqueued on a schedule.
--
-- queue.schedule(name, kind, cron, payload) declares (or replaces) one; queue.unschedule(name)
-- removes it. Every worker's heartbeat calls queue.fire_schedules(): the worker that wins the
-- advisory lock enqueues, for each schedule, the latest slot (a minute, UTC) that has come
-- since the schedule was declared or last fired, and advances last_fired_at in the same
-- transaction, so a slot is enqueued once across the fleet. Slots missed while no worker ran
-- are not replayed: only the latest is enqueued. The job's subject is name:slot
-- (e.g. nightly:2027-01-04T03:00Z). A paused kind still gets its jobs; the pause holds them.
--
-- The cron syntax is the usual five fields (minute hour day-of-month month day-of-week, UTC)
-- with numbers, `*`, lists, ranges and steps, day-of-week 0-7 (0 and 7 are Sunday), and
-- when both day fields are restricted a day matching either one (as Vixie cron does); and
-- @hourly, @daily (@midnight), @weekly, @monthly, @yearly (@annually).

CREATE TABLE queue.schedules (
    name          text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,100}$'),
    kind          text        NOT NULL CHECK (kind <> '' AND length(kind) <= 200),
    cron          text        NOT NULL,
    payload       jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (
        jsonb_typeof(payload) = 'object'
        AND octet_length(payload::text) <= 65536
        AND NOT jsonb_path_exists(payload, 'strict $.**{32}')),
    declared_at   timestamptz NOT NULL DEFAULT now(),
    declared_by   name        NOT NULL DEFAULT session_user,
    last_fired_at timestamptz,  -- the slot last enqueued
    last_job_id   bigint
);

COMMENT ON TABLE queue.schedules IS
    'Jobs enqueued on a cron schedule (UTC) by queue.fire_schedules; written by queue.schedule.';

-- The values one cron field allows, from p_lo to p_hi; invalid_parameter_value otherwise.
CREATE FUNCTION queue.cron_field(p_field text, p_lo integer, p_hi integer, p_what text)
RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_part text;
    v_m    text[];
    v_a    integer;
    v_b    integer;
    v_step integer;
    v_out  integer[] := '{}';
BEGIN
    FOREACH v_part IN ARRAY string_to_array(p_field, ',') LOOP
        v_m := regexp_match(v_part, '^(?:(\*)|([0-9]{1,2})(?:-([0-9]{1,2}))?)(?:/([0-9]{1,2}))?$');
        IF v_m IS NULL THEN
            RAISE EXCEPTION 'cron %: % is not *, a number, a range or a step (N, A-B, */S, A-B/S)',
                p_what, quote_literal(v_part) USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_a := coalesce(v_m[2]::integer, p_lo);
        v_b := CASE WHEN v_m[1] IS NOT NULL THEN p_hi
                    WHEN v_m[3] IS NOT NULL THEN v_m[3]::integer
                    WHEN v_m[4] IS NOT NULL THEN p_hi  -- A/S: from A to the end
                    ELSE v_a END;
        v_step := coalesce(v_m[4]::integer, 1);
        IF v_a < p_lo OR v_b > p_hi OR v_a > v_b OR v_step < 1 THEN
            RAISE EXCEPTION 'cron %: % is outside %-% (or empty, or a step of 0)',
                p_what, quote_literal(v_part), p_lo, p_hi
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_out := v_out || ARRAY(SELECT generate_series(v_a, v_b, v_step));
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT x FROM unnest(v_out) x ORDER BY x);
END;
$$;

-- The latest slot of p_cron after p_after and at or before p_now (both as instants; the
-- cron reads UTC), or NULL; invalid_parameter_value for a cron it cannot read. Looks back at
-- most 1500 days.
CREATE FUNCTION queue.cron_latest(p_cron text, p_after timestamptz, p_now timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_cron    text := btrim(coalesce(p_cron, ''));
    v_f       text[];
    v_min     integer[];
    v_hour    integer[];
    v_dom     integer[];
    v_mon     integer[];
    v_dow     integer[];
    v_either  boolean;
    v_dom_ok  boolean;
    v_dow_ok  boolean;
    v_now     timestamp := date_trunc('minute', p_now AT TIME ZONE 'UTC');
    v_after   timestamp := p_after AT TIME ZONE 'UTC';
    v_day     date;
    v_h       integer;
    v_m       integer;
    v_t       timestamp;
BEGIN
    v_cron := CASE lower(v_cron)
        WHEN '@hourly' THEN '0 * * * *' WHEN '@daily' THEN '0 0 * * *'
        WHEN '@midnight' THEN '0 0 * * *' WHEN '@weekly' THEN '0 0 * * 0'
        WHEN '@monthly' THEN '0 0 1 * *' WHEN '@yearly' THEN '0 0 1 1 *'
        WHEN '@annually' THEN '0 0 1 1 *' ELSE v_cron END;
    v_f := regexp_split_to_array(v_cron, '\s+');
    IF length(v_cron) > 200 OR cardinality(v_f) <> 5 THEN
        RAISE EXCEPTION 'cron %: expected five fields (minute hour day-of-month month '
                        'day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly',
            quote_literal(left(p_cron, 200)) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_min := queue.cron_field(v_f[1], 0, 59, 'minute');
    v_hour := queue.cron_field(v_f[2], 0, 23, 'hour');
    v_dom := queue.cron_field(v_f[3], 1, 31, 'day of month');
    v_mon := queue.cron_field(v_f[4], 1, 12, 'month');
    v_dow := ARRAY(SELECT DISTINCT x % 7 FROM unnest(queue.cron_field(v_f[5], 0, 7,
                                                                      'day of week')) x);
    -- both day fields restricted: a day matching either (Vixie cron); else both must match
    v_either := v_f[3] NOT LIKE '*%' AND v_f[5] NOT LIKE '*%';
    IF p_now IS NULL OR p_after IS NULL OR NOT isfinite(p_now) THEN
        RETURN NULL;
    END IF;
    v_day := v_now::date;
    WHILE v_day >= v_after::date AND v_day > v_now::date - 1500 LOOP
        v_dom_ok := extract(day FROM v_day)::integer = ANY (v_dom);
        v_dow_ok := extract(dow FROM v_day)::integer = ANY (v_dow);
        IF extract(month FROM v_day)::integer = ANY (v_mon)
           AND ((v_either AND (v_dom_ok OR v_dow_ok)) OR (v_dom_ok AND v_dow_ok)) THEN
            FOREACH v_h IN ARRAY ARRAY(SELECT x FROM unnest(v_hour) x ORDER BY x DESC) LOOP
                -- today's later hours have not come yet
                CONTINUE WHEN v_day = v_now::date AND v_h > extract(hour FROM v_now);
                FOREACH v_m IN ARRAY ARRAY(SELECT x FROM unnest(v_min) x ORDER BY x DESC) LOOP
                    v_t := v_day + make_interval(hours => v_h, mins => v_m);
                    IF v_t <= v_now THEN
                        RETURN CASE WHEN v_t > v_after THEN v_t AT TIME ZONE 'UTC' END;
                    END IF;
                END LOOP;
            END LOOP;
        END IF;
        v_day := v_day - 1;
    END LOOP;
    RETURN NULL;
END;
$$;

-- Declare (or replace) schedule p_name. True when it is new. A replaced schedule starts
-- afresh: slots before now are not enqueued.
CREATE FUNCTION queue.schedule(p_name text, p_kind text, p_cron text,
                               p_payload jsonb DEFAULT '{}'::jsonb)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_new boolean;
BEGIN
    -- a cron that cannot be read, or names no minute in four years (30 February), is refused
    IF queue.cron_latest(p_cron, now(), now() + interval '1500 days') IS NULL THEN
        RAISE EXCEPTION 'cron %: it names no time that ever comes', quote_literal(p_cron)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_name IS NULL OR p_name !~ '^[A-Za-z0-9_.-]{1,100}$' THEN
        RAISE EXCEPTION 'schedule name %: use 1-100 letters, digits, _ . -',
            quote_literal(left(p_name, 100)) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO queue.schedules AS s (name, kind, cron, payload)
    VALUES (p_name, p_kind, btrim(p_cron), coalesce(p_payload, '{}'::jsonb))
    ON CONFLICT (name) DO UPDATE
    SET kind = EXCLUDED.kind, cron = EXCLUDED.cron, payload = EXCLUDED.payload,
        declared_at = now(), declared_by = session_user
    RETURNING (xmax = 0) INTO v_new;
    RETURN v_new;
END;
$$;

-- True when schedule p_name existed. Jobs it already enqueued stay.
CREATE FUNCTION queue.unschedule(p_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM queue.schedules WHERE name = p_name;
    RETURN FOUND;
END;
$$;

-- The due slots as of p_now, each enqueued once: what was enqueued. Nothing when another
-- transaction is firing (it holds the turn). A schedule whose row cannot be read (only the
-- owner can write such a row) is skipped with a warning; the others still fire.
CREATE FUNCTION queue.fire_schedules(p_now timestamptz)
RETURNS TABLE (name text, slot timestamptz, job_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_s    record;
    v_slot timestamptz;
    v_job  bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('queue.fire_schedules')) THEN
        RETURN;
    END IF;
    -- read without locking: a tick with nothing due writes nothing and takes no xid
    FOR v_s IN SELECT s.name, s.kind, s.cron, s.payload,
                      greatest(s.declared_at, s.last_fired_at) AS after
               FROM queue.schedules s ORDER BY s.name LOOP
        BEGIN
            v_slot := queue.cron_latest(v_s.cron, v_s.after, p_now);
        EXCEPTION WHEN invalid_parameter_value THEN
            RAISE WARNING 'schedule %: %', v_s.name, SQLERRM;
            CONTINUE;
        END;
        CONTINUE WHEN v_slot IS NULL;
        -- due: lock the row, and go on only if no one re-declared it since it was read
        PERFORM 1 FROM queue.schedules s
        WHERE s.name = v_s.name AND s.kind = v_s.kind AND s.cron = v_s.cron
          AND s.payload = v_s.payload
          AND greatest(s.declared_at, s.last_fired_at) = v_s.after
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        v_job := queue.enqueue(v_s.kind, v_s.name || ':'
                               || to_char(v_slot AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"'),
                               v_s.payload);
        UPDATE queue.schedules s SET last_fired_at = v_slot, last_job_id = v_job
        WHERE s.name = v_s.name;
        name := v_s.name; slot := v_slot; job_id := v_job;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- What the worker's heartbeat calls: the server's clock, so no login can fire a slot early
-- or push a schedule's last slot into the future.
CREATE FUNCTION queue.fire_schedules()
RETURNS TABLE (name text, slot timestamptz, job_id bigint)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT f.name, f.slot, f.job_id FROM queue.fire_schedules(now()) f;
$$;

REVOKE ALL ON queue.schedules FROM PUBLIC;
GRANT SELECT ON queue.schedules TO llm_worker, llm_operator;
REVOKE ALL ON FUNCTION queue.cron_field(text, integer, integer, text),
    queue.cron_latest(text, timestamptz, timestamptz),
    queue.schedule(text, text, text, jsonb), queue.unschedule(text),
    queue.fire_schedules(timestamptz), queue.fire_schedules() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION queue.schedule(text, text, text, jsonb), queue.unschedule(text)
    TO llm_operator;
GRANT EXECUTE ON FUNCTION queue.fire_schedules() TO llm_worker;
