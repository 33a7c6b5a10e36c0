"""A PostgreSQL-native job worker for the LLM work of a study app.

Triggers enqueue jobs in SQL; this package claims them, runs them and writes results back.
"""

from __future__ import annotations

__version__ = "0.1.0"
