"""The operator's web dashboard (`python -m worker dashboard`): server-rendered pages of the
queue, failures, jobs, model usage and content, and buttons that call the operator functions.
"""

from __future__ import annotations

from worker.dashboard.app import create_app

__all__ = ["create_app"]
