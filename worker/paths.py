"""Where the project's non-Python files live: `sql/` and `prompts/` beside the package.

Overridable by environment for installs that put them elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = Path(os.environ.get("WORKER_SQL_DIR", PROJECT_ROOT / "sql"))
MIGRATIONS_DIR = SQL_DIR / "migrations"
QUERIES_DIR = SQL_DIR / "queries"
PROMPTS_DIR = Path(os.environ.get("WORKER_PROMPTS_DIR", PROJECT_ROOT / "prompts"))
