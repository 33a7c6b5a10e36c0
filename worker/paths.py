"""Where the project's non-Python files live: `sql/` and `prompts/` beside the package.

WORKER_SQL_DIR moves `sql/` for installs that put it elsewhere; it is read once, at import,
because the queries are loaded then. The prompts' directory is a setting (WORKER_PROMPTS_DIR).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = Path(os.environ.get("WORKER_SQL_DIR", PROJECT_ROOT / "sql"))
MIGRATIONS_DIR = SQL_DIR / "migrations"
QUERIES_DIR = SQL_DIR / "queries"
PROMPTS_DIR = PROJECT_ROOT / "prompts"
