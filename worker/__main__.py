"""`python -m worker …`: the command-line entry point."""

from __future__ import annotations

from worker.cli import main

raise SystemExit(main())
