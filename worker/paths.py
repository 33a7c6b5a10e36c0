"""Where the project's files are: the SQL and prompts it ships, and the state a run writes
(the embedded server's data directory, the assembled offline model, the local servers' logs).

An installed wheel carries `sql/` and `prompts/` inside the package (`worker/_data/`, copied
there by setup.py) and keeps its state in $STATE_DIRECTORY (systemd's StateDirectory=) or the
user's state directory; a source checkout (or an editable install of one) reads the top-level
`sql/` and `prompts/` and keeps its state in `.data/` beside them. WORKER_SQL_DIR moves `sql/`;
it is read once, at import, because the queries are loaded then. The prompts' directory is a
setting (WORKER_PROMPTS_DIR).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import platformdirs

APP_NAME = "pg-llm-worker"
CHECKOUT_ROOT = Path(__file__).resolve().parent.parent


def _shipped() -> Path | None:
    """The package's own copy of sql/ and prompts/, present in a wheel install only."""
    data = resources.files("worker") / "_data"
    # pip installs wheels unpacked, so a present copy is a real directory
    return Path(str(data)) if data.is_dir() else None


def state_dir() -> Path:
    """Where a run keeps what it writes unless the settings say otherwise; never inside the
    installed package."""
    if SHIPPED is None:
        return CHECKOUT_ROOT / ".data"
    # systemd gives StateDirectory= as $STATE_DIRECTORY (several are separated by ":")
    given = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return Path(given) if given else platformdirs.user_state_path(APP_NAME)


SHIPPED = _shipped()
DATA_ROOT = SHIPPED or CHECKOUT_ROOT
SQL_DIR = Path(os.environ.get("WORKER_SQL_DIR", DATA_ROOT / "sql"))
MIGRATIONS_DIR = SQL_DIR / "migrations"
QUERIES_DIR = SQL_DIR / "queries"
PROMPTS_DIR = DATA_ROOT / "prompts"
