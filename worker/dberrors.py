"""What a database error in a claim means: the connection is gone, or one job met a conflict.

psycopg raises OperationalError for a lost connection, but also for a deadlock, a lock timeout
or a cancelled statement on a healthy one. Only a lost connection ends the whole claim.
"""

from __future__ import annotations

import psycopg

from worker.registry import JobConnection

# the server ended the session (admin shutdown, crash shutdown, starting up again)
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})
# errors of one statement on a healthy connection, and the job error each becomes
_CODES = {
    "40P01": "db_conflict",   # deadlock detected
    "40001": "db_conflict",   # serialization failure
    "55P03": "db_conflict",   # lock not available (lock_timeout, NOWAIT)
    "57014": "db_timeout",    # statement_timeout or a cancel
}


def connection_lost(conn: JobConnection, exc: BaseException) -> bool:
    """True when `exc` means the claim's connection (and so its transaction) is gone."""
    if conn.closed or conn.broken or isinstance(exc, psycopg.InterfaceError):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate.startswith("08") or sqlstate in _SESSION_ENDED


def error_code(exc: psycopg.Error) -> str:
    """The job's error_code for a database error that did not end the connection."""
    sqlstate = exc.sqlstate or ""
    if sqlstate in _CODES:
        return _CODES[sqlstate]
    if sqlstate[:2] in ("53", "54"):
        return "db_resources"  # out of memory, disk or connections; a program limit
    return "db_error"


def describe(exc: psycopg.Error) -> str:
    primary = exc.diag.message_primary or str(exc).strip()
    return f"{exc.sqlstate or 'no SQLSTATE'}: {primary}"
