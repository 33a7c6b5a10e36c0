"""The job kinds this package ships, registered on a fresh registry by builtin_registry().

Each kind is a small module supplying its handler to the shared pipeline.
"""

from __future__ import annotations

from worker.registry import Registry, registry


def builtin_registry() -> Registry:
    """The shared registry, with the built-in kinds (none yet beyond plugins) registered."""
    return registry
