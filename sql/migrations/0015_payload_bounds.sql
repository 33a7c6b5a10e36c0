-- Payloads are bounded at the door: at most 64 KiB of JSON text, nested at most 31 levels.
-- A payload the worker cannot decode (jsonb nests far deeper than a JSON parser recurses)
-- used to break the whole claim of its kind. The worker now decodes each job's payload on
-- its own and fails only that job `bad_payload`; this check keeps such rows out in the
-- first place. NOT VALID: rows already stored are not checked (the worker handles them).
ALTER TABLE queue.jobs ADD CONSTRAINT payload_bounded CHECK (
    octet_length(payload::text) <= 65536
    AND NOT jsonb_path_exists(payload, 'strict $.**{32}')
) NOT VALID;

COMMENT ON CONSTRAINT payload_bounded ON queue.jobs IS
    'a job payload is at most 64 KiB of JSON text and nested at most 31 levels deep';
