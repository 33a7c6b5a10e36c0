-- A rate limit per model endpoint, shared by every worker process.
--
-- A worker configured with a limit for an endpoint (WORKER_CHAT_RATE_LIMIT and friends)
-- takes a slot here right before each request, inside the endpoint's gate:
-- queue.rate_take counts the requests (and estimated tokens) the fleet sent in the last
-- window and either records this one (0) or says how many seconds until it would fit. A
-- 429 from the server blocks the endpoint for every worker until its retry-after
-- (queue.rate_block). The limiter's row serializes the fleet's takes; the events are an
-- UNLOGGED table (a crash forgets the last window, which only errs towards sending).

CREATE TABLE queue.rate_limiters (
    key           text PRIMARY KEY,
    blocked_until timestamptz
);

CREATE UNLOGGED TABLE queue.rate_events (
    key    text        NOT NULL,
    at     timestamptz NOT NULL,
    tokens integer     NOT NULL
);
CREATE INDEX rate_events_key_at ON queue.rate_events (key, at);

COMMENT ON TABLE queue.rate_events IS
    'Requests sent per rate-limited model endpoint in the current window (queue.rate_take).';

-- Seconds until a request of p_tokens fits in p_key's limits (at most p_requests requests
-- and p_tokens_max tokens per p_window seconds; NULL: no such limit); 0 means it was
-- recorded and may go now.
CREATE FUNCTION queue.rate_take(p_key text, p_requests integer, p_tokens_max integer,
                                p_window float8, p_tokens integer)
RETURNS float8
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_key     text := left(p_key, 500);
    v_now     timestamptz;
    v_since   timestamptz;
    v_blocked timestamptz;
    v_count   integer;
    v_sum     bigint;
    v_free_at timestamptz;
BEGIN
    INSERT INTO queue.rate_limiters (key) VALUES (v_key) ON CONFLICT DO NOTHING;
    SELECT blocked_until INTO v_blocked FROM queue.rate_limiters
    WHERE key = v_key FOR UPDATE;
    v_now := clock_timestamp();  -- after the wait for the row, if there was one
    v_since := v_now - make_interval(secs => p_window);
    IF v_blocked > v_now THEN
        RETURN extract(epoch FROM v_blocked - v_now);
    END IF;
    DELETE FROM queue.rate_events WHERE key = v_key AND at <= v_since;
    SELECT count(*), coalesce(sum(tokens), 0) INTO v_count, v_sum
    FROM queue.rate_events WHERE key = v_key;
    IF (p_requests IS NULL OR v_count < p_requests)
       AND (p_tokens_max IS NULL OR v_sum + p_tokens <= p_tokens_max OR v_count = 0) THEN
        INSERT INTO queue.rate_events (key, at, tokens)
        VALUES (v_key, v_now, greatest(p_tokens, 0));
        RETURN 0;
    END IF;
    -- the earliest moment enough of the window's events have aged out: the oldest event
    -- whose going leaves room for one more request and for p_tokens more tokens
    SELECT min(e.at) INTO v_free_at
    FROM (SELECT at,
                 count(*) OVER (ORDER BY at ROWS UNBOUNDED PRECEDING) AS gone,
                 sum(tokens) OVER (ORDER BY at ROWS UNBOUNDED PRECEDING) AS gone_tokens
          FROM queue.rate_events WHERE key = v_key) e
    WHERE (p_requests IS NULL OR v_count - e.gone < p_requests)
      AND (p_tokens_max IS NULL OR v_sum - e.gone_tokens + p_tokens <= p_tokens_max
           OR e.gone = v_count);
    RETURN greatest(extract(epoch FROM v_free_at + make_interval(secs => p_window) - v_now),
                    0.001);
END;
$$;

-- The server said 429: nobody sends to p_key for p_seconds (never shortens a block).
CREATE FUNCTION queue.rate_block(p_key text, p_seconds float8) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO queue.rate_limiters AS r (key, blocked_until)
    VALUES (left(p_key, 500),
            clock_timestamp() + make_interval(secs => least(greatest(p_seconds, 0), 3600)))
    ON CONFLICT (key) DO UPDATE
    SET blocked_until = greatest(r.blocked_until, EXCLUDED.blocked_until);
$$;

REVOKE ALL ON queue.rate_limiters, queue.rate_events FROM PUBLIC;
GRANT SELECT ON queue.rate_limiters TO llm_worker, llm_operator;
REVOKE ALL ON FUNCTION queue.rate_take(text, integer, integer, float8, integer),
    queue.rate_block(text, float8) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION queue.rate_take(text, integer, integer, float8, integer),
    queue.rate_block(text, float8) TO llm_worker;
