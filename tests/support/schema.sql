-- Tables the test job kinds write to (tests/support/kinds.py).
CREATE TABLE test_effects (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     bigint  NOT NULL,
    attempt    integer NOT NULL,
    worker_pid integer NOT NULL,
    note       text,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE test_started (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     bigint  NOT NULL,
    attempt    integer NOT NULL,
    worker_pid integer NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- the test job kinds run as the worker's least-privilege role in some tests
GRANT SELECT, INSERT ON test_effects, test_started TO llm_worker;
