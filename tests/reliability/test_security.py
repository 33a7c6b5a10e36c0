"""Security: the worker's role can create, alter and drop nothing; secrets never reach logs,
rows or messages; and no SQL in the worker is built from data (a static check).
"""

from __future__ import annotations

import ast
import itertools
import re
import signal
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.reliability.support import (
    API_KEY,
    LOGIN_PASSWORD,
    LOGIN_ROLE,
    SEED,
    Course,
    Fleet,
    assert_no_secrets,
    database_text,
    envelope,
    marker_in,
    model_env,
    one,
    report,
    sql,
    wait_terminal,
)
from tests.support import fake_openai as fake
from tests.support.procs import ROOT, wait_for
from worker.queries import q

pytestmark = pytest.mark.chaos

WORKER = ROOT / "worker"
# executes whose SQL is not a named query, and why that is safe
NOT_A_NAMED_QUERY = {("worker/migrate.py", "migration.body.encode()"):
                     "a whole migration file from sql/migrations/, applied by the owner",
                     ("worker/savepoints.py", "query"):
                     "JobConn passes a handler's statement through; the handler's own call "
                     "is where it is checked"}
SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|GRANT|"
                       r"TRUNCATE|COPY|LISTEN|NOTIFY|SET|DO)\b", re.IGNORECASE)


def _constant_dicts(tree: ast.Module) -> dict[str, list[object]]:
    """Module-level `NAME = {...: "query", ...}` dicts, by name: their values."""
    found: dict[str, list[object]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = [v.value if isinstance(v, ast.Constant) else v
                                        for v in node.value.values]
    return found


def _parameters(tree: ast.Module) -> dict[int, set[str]]:
    """For each line, the parameter names of the function it sits in."""
    params: dict[int, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names = {a.arg for a in [*node.args.args, *node.args.kwonlyargs]}
            for line in range(node.lineno, (node.end_lineno or node.lineno) + 1):
                params.setdefault(line, set()).update(names)
    return params


def _query_name_problem(arg: ast.expr, tree: ast.Module, line: int,
                        params: dict[int, set[str]]) -> str | None:
    """Why q(arg) might not be a fixed, named query; None when it is one."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        try:
            q(arg.value)
        except KeyError:
            return f"q({arg.value!r}) names no query in sql/queries/"
        return None
    if isinstance(arg, ast.Subscript) and isinstance(arg.value, ast.Name):
        values = _constant_dicts(tree).get(arg.value.id)
        if values is None or not all(isinstance(v, str) for v in values):
            return f"q({ast.unparse(arg)}) is not a lookup in a constant dict of query names"
        missing = [v for v in values if isinstance(v, str) and v not in _known(v)]
        return f"unknown queries {missing}" if missing else None
    if isinstance(arg, ast.Name) and arg.id in params.get(line, set()):
        return None  # a query name handed in by the caller, itself checked at its call
    return f"q({ast.unparse(arg)}) is computed"


def _known(name: str) -> set[str]:
    try:
        q(name)
    except KeyError:
        return set()
    return {name}


def test_sql_is_never_built_from_data() -> None:
    """Every execute() in worker/ runs a named query from sql/queries/ (q("…")), never an
    f-string, %-formatting, concatenation or .format; no Python string in the package starts
    like SQL and is then formatted; psycopg.sql composition is not used at all."""
    problems: list[str] = []
    executes = 0
    for path in sorted(WORKER.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), rel)
        params = _parameters(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "psycopg" and any(
                    a.name == "sql" for a in node.names):
                problems.append(f"{rel}:{node.lineno}: imports psycopg.sql (composed SQL)")
            if isinstance(node, ast.Import) and any(a.name == "psycopg.sql" for a in node.names):
                problems.append(f"{rel}:{node.lineno}: imports psycopg.sql (composed SQL)")
            if isinstance(node, ast.JoinedStr):
                head = "".join(v.value for v in node.values
                               if isinstance(v, ast.Constant) and isinstance(v.value, str))
                if SQL_START.match(head):
                    problems.append(f"{rel}:{node.lineno}: an f-string that reads as SQL")
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add) and (
                    isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)
                    and SQL_START.match(node.left.value)):
                problems.append(f"{rel}:{node.lineno}: SQL text built with % or +")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "format" and isinstance(node.func.value, ast.Constant)
                    and isinstance(node.func.value.value, str)
                    and SQL_START.match(node.func.value.value)):
                problems.append(f"{rel}:{node.lineno}: SQL text built with .format")
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("execute", "executemany", "copy", "stream")
                    and node.args):
                continue
            executes += 1
            first = node.args[0]
            where = f"{rel}:{node.lineno}: {node.func.attr}({ast.unparse(first)})"
            if (isinstance(first, ast.Call) and isinstance(first.func, ast.Name)
                    and first.func.id == "q" and len(first.args) == 1):
                problem = _query_name_problem(first.args[0], tree, node.lineno, params)
                if problem:
                    problems.append(f"{where}: {problem}")
            elif (rel, ast.unparse(first)) not in NOT_A_NAMED_QUERY:
                problems.append(f"{where}: not a named query")
    assert problems == []
    assert executes > 30, "the scan found the worker's queries"


def test_the_worker_role_cannot_create_alter_or_drop_anything(worker_dsn: str,
                                                               dsn: str) -> None:
    refused = [
        "CREATE TABLE queue.sneaky (id int)", "CREATE TABLE public.sneaky (id int)",
        "CREATE TABLE app.sneaky (id int)", "SELECT 1 AS x INTO queue.sneaky",
        "CREATE SCHEMA sneaky", "CREATE VIEW queue.sneaky AS SELECT 1",
        "CREATE INDEX sneaky ON queue.jobs (kind)", "CREATE SEQUENCE queue.sneaky",
        "CREATE TYPE queue.sneaky AS (a int)",
        "CREATE FUNCTION queue.sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE TRIGGER sneaky AFTER INSERT ON queue.jobs "
        "FOR EACH ROW EXECUTE FUNCTION queue.notify_new_jobs()",
        "CREATE EXTENSION pg_trgm", "CREATE ROLE sneaky", "CREATE DATABASE sneaky",
        "ALTER TABLE queue.jobs ADD COLUMN sneaky int",
        "ALTER TABLE queue.jobs DISABLE TRIGGER ALL",
        "ALTER TABLE app.questions DROP CONSTRAINT questions_correct_choice_check",
        "ALTER FUNCTION queue.requeue(bigint) OWNER TO chaos_worker",
        "ALTER ROLE llm_worker SUPERUSER", "ALTER ROLE chaos_worker CREATEROLE",
        "ALTER SYSTEM SET fsync = off", "COMMENT ON TABLE queue.jobs IS 'sneaky'",
        "REINDEX TABLE queue.jobs",
        "DROP TABLE queue.attempts", "DROP FUNCTION queue.requeue(bigint)",
        "DROP SCHEMA app CASCADE", "DROP ROLE llm_worker", "DROP EXTENSION vector",
        "TRUNCATE queue.jobs", "DELETE FROM queue.jobs", "DELETE FROM app.questions",
        "INSERT INTO queue.jobs (kind) VALUES ('sneaky')",
        "UPDATE queue.jobs SET kind = 'sneaky'", "UPDATE queue.jobs SET payload = '{}'",
        "UPDATE app.questions SET correct_choice = 1",
        "UPDATE app.questions SET question_text = 'sneaky'",
        "SELECT email FROM app.users", "SELECT * FROM queue.migrations_sneaky_absent",
        "GRANT SELECT ON app.users TO llm_worker", "GRANT pg_read_all_data TO chaos_worker",
        "SET ROLE postgres", "SET SESSION AUTHORIZATION postgres",
        "COPY queue.jobs TO '/tmp/sneaky'", "COPY (SELECT 1) TO PROGRAM 'true'",
        "SELECT pg_read_file('postgresql.conf')", "SELECT pg_ls_dir('.')",
        "LOCK TABLE queue.jobs IN ACCESS EXCLUSIVE MODE",
    ]
    allowed: list[str] = []
    with psycopg.connect(worker_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (LOGIN_ROLE,)
        for statement in refused:
            try:
                if statement.startswith("LOCK"):
                    with conn.transaction():
                        conn.execute(statement.encode())
                else:
                    conn.execute(statement.encode())
                allowed.append(statement)
            except (psycopg.errors.InsufficientPrivilege,
                    psycopg.errors.UndefinedTable):  # the last SELECT: no such table either
                pass
    assert allowed == [], "the worker's role could run these"

    login = LOGIN_ROLE
    owned = one(dsn, """
        SELECT (SELECT count(*) FROM pg_class WHERE relowner = r.oid)
             + (SELECT count(*) FROM pg_proc WHERE proowner = r.oid)
             + (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid)
             + (SELECT count(*) FROM pg_type WHERE typowner = r.oid)
        FROM pg_roles r WHERE r.rolname = %s""", (login,))
    assert owned == 0
    attributes = sql(dsn, "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, "
                          "rolreplication, rolbypassrls FROM pg_roles "
                          "WHERE rolname IN ('llm_worker', %s)", (login,))
    assert all(not any(v for k, v in r.items() if k != "rolname") for r in attributes)
    assert one(dsn, "SELECT has_database_privilege(%s, current_database(), 'CREATE')",
               (login,)) is False
    assert sql(dsn, "SELECT nspname FROM pg_namespace "
                    "WHERE has_schema_privilege(%s, oid, 'CREATE')", (login,)) == []
    writable = sql(dsn, """
        SELECT c.oid::regclass::text AS tbl, p.priv
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER',
                                'REFERENCES']) AS p(priv)
        WHERE n.nspname IN ('queue', 'app', 'public') AND c.relkind IN ('r', 'p', 'v')
          AND has_table_privilege(%s, c.oid, p.priv)
        ORDER BY 1, 2""", (login,))
    # whole-table rights: appending accounting rows and the test tables; the queue's own
    # rows change only through the functions that check the claim, and the app columns
    # the kinds write are granted column by column
    assert {(r["tbl"], r["priv"]) for r in writable} <= {
        ("queue.model_calls", "INSERT"),
        ("test_effects", "INSERT"), ("test_started", "INSERT"),
        ("chaos_writebacks", "INSERT")}
    columns = sql(dsn, """
        SELECT c.oid::regclass::text AS tbl, a.attname AS col
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE n.nspname = 'queue' AND c.relkind IN ('r', 'p')
          AND has_column_privilege(%s, c.oid, a.attnum, 'UPDATE')""", (login,))
    assert columns == []


@pytest.mark.xfail(strict=True, reason=(
    "accepted for now: PUBLIC's defaults let every role, the worker's included, create "
    "temporary tables and large objects; revoking TEMPORARY on the database and the lo_* "
    "creators from PUBLIC would affect every application role, so it is the DBA's call "
    "(docs/operations.md, Least privilege, shows how)"))
def test_the_worker_role_cannot_create_temporary_or_large_objects(worker_dsn: str) -> None:
    refused = ["CREATE TEMPORARY TABLE sneaky (id int)", "SELECT lo_create(0)",
               "SELECT lo_from_bytea(0, 'sneaky')"]
    allowed: list[str] = []
    with psycopg.connect(worker_dsn, autocommit=True) as conn:
        for statement in refused:
            try:
                conn.execute(statement.encode())
                allowed.append(statement)
            except psycopg.errors.InsufficientPrivilege:
                pass
    assert allowed == []


def _secret_run(dsn: str, worker_dsn: str, model: fake.FakeOpenAI,
                fleets: Callable[..., Fleet], chat: fake.Responder, jobs: int,
                **env: str) -> tuple[Fleet, list[int]]:
    """`jobs` explanation requests answered by `chat`, run by one worker process logged in
    with a password and holding an API key; returns the fleet and the job ids."""
    course = Course(dsn)
    model.fallback["chat"] = chat
    job_ids = [course.request(course.add(marker, key=2)) for marker in range(1, jobs + 1)]
    fleet = fleets(worker_dsn, model_env(model, WORKER_LOG_LEVEL="debug", **env))
    fleet.start(1)
    wait_terminal(dsn, job_ids, 120, fleet)
    return fleet, job_ids


def test_no_secret_reaches_any_artefact_of_a_run(
        dsn: str, worker_dsn: str, model: fake.FakeOpenAI,
        fleets: Callable[..., Fleet]) -> None:
    """A run with good answers, guard failures, unusable replies and server errors, and a
    worker killed and replaced in the middle: the password and the key appear nowhere."""
    replies = itertools.cycle(["good", "wrong", "garbage", "error"])

    def chat(request: fake.Recorded) -> fake.Reply:
        marker = marker_in(request) or 0
        reply = next(replies)
        if reply == "good":
            return fake.chat_json(envelope(2))
        if reply == "wrong":
            return fake.chat_json(envelope(3))
        if reply == "garbage":
            return fake.chat(f"not json for question {marker}")
        return fake.server_error()

    fleet, job_ids = _secret_run(dsn, worker_dsn, model, fleets, chat, jobs=8)
    (worker,) = fleet.alive
    worker.signal(signal.SIGKILL)
    worker.wait(30)
    fleet.alive.remove(worker)
    fleet.start(1)
    fleet.stop()
    output = fleet.output()
    wait_for(lambda: output, message="worker output")
    searched = assert_no_secrets(output, database_text(dsn))
    report("security", "fixed", SEED, {"jobs": len(job_ids), "log_lines":
                                       len(output.splitlines()), "chars_searched": searched,
                                       "leaks": 0})


def test_an_api_key_echoed_by_the_model_server_is_not_stored(
        dsn: str, worker_dsn: str, model: fake.FakeOpenAI,
        fleets: Callable[..., Fleet]) -> None:
    def echo(request: fake.Recorded) -> fake.Reply:
        return fake.error(401, f"Incorrect API key provided: "
                               f"{request.headers.get('authorization')}",
                          code="invalid_api_key")

    fleet, job_ids = _secret_run(dsn, worker_dsn, model, fleets, echo, jobs=2)
    fleet.stop()
    assert {r["error_code"] for r in sql(dsn, "SELECT error_code FROM queue.jobs "
                                              "WHERE id = ANY(%s)", (job_ids,))} == {
        "bad_request"}
    assert API_KEY not in fleet.output(), "the log is masked"
    assert API_KEY not in database_text(dsn)


def test_an_api_key_of_no_known_shape_echoed_by_the_server_is_not_stored(
        dsn: str, worker_dsn: str, model: fake.FakeOpenAI,
        fleets: Callable[..., Fleet]) -> None:
    """A key no pattern recognises (not `sk-`, not after `Bearer`), echoed bare in a 401:
    masked as the configured value it is, in the log and in the stored message."""
    key = "gsk_live_7c1e9a3b5d2f4e6a8b0c"

    def echo(request: fake.Recorded) -> fake.Reply:
        return fake.error(401, f"Incorrect API key provided: {key}", code="invalid_api_key")

    fleet, job_ids = _secret_run(dsn, worker_dsn, model, fleets, echo, jobs=2,
                                 OPENAI_API_KEY=key)
    fleet.stop()
    messages = sql(dsn, "SELECT error_message FROM queue.jobs WHERE id = ANY(%s)", (job_ids,))
    assert all("Incorrect API key provided: ***" in m["error_message"] for m in messages)
    assert key not in fleet.output(), "the log is masked"
    assert key not in database_text(dsn)


def test_the_login_password_is_not_in_the_worker_command_line(dsn: str, worker_dsn: str,
                                                              fleets: Callable[..., Fleet]
                                                              ) -> None:
    """The DSN travels in the environment, never on the command line (which every local
    user can read in /proc)."""
    fleet = fleets(worker_dsn, {"WORKER_KINDS": ""})
    (worker,) = fleet.start(1)
    cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes().decode(errors="replace")
    assert LOGIN_PASSWORD not in cmdline and API_KEY not in cmdline
    fleet.stop()
