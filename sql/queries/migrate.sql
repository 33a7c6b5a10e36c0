-- Queries of the migration runner (worker/migrate.py).

-- name: lock
-- One migrator at a time, across processes; released when the transaction ends.
SELECT pg_advisory_xact_lock(8347109823471);

-- name: bootstrap
CREATE SCHEMA IF NOT EXISTS queue;
CREATE TABLE IF NOT EXISTS queue.migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied
SELECT version, name, checksum FROM queue.migrations ORDER BY version;

-- name: record
-- Inserted before the migration body runs, so a migrator that somehow skipped the lock
-- collides on the primary key instead of applying the same file twice.
INSERT INTO queue.migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s);

-- name: has_migrations_table
SELECT to_regclass('queue.migrations') IS NOT NULL AS present;

-- name: server_encoding
SELECT current_setting('server_encoding') AS encoding;

-- name: pgvector_available
SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') AS available;

-- name: set_variable
-- For the migration transaction only (is_local = true).
SELECT set_config(%(name)s, %(value)s, true);
