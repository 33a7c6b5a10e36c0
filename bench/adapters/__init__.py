"""Queue adapters. See adapters/_template.py for the interface a new queue must implement.

Copied from the team's shared harness (shared/bench-peers/adapters/__init__.py).
"""

from __future__ import annotations

