"""Build hook: the top-level sql/, prompts/ and data/eval/ (the evaluation's labelled set)
ship inside the package, as worker/_data/.

They stay at the top of the repository (the layout the project documents); a wheel carries a
copy that worker/paths.py finds through importlib.resources. Everything else is pyproject.toml.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("sql", "prompts", "data/eval")


class BuildWithData(build_py):
    """build_py, plus a copy of SHIPPED under worker/_data/ in the build."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads them from the checkout
            return
        for folder in SHIPPED:
            for source in sorted(Path(folder).rglob("*")):
                if source.is_file() and "__pycache__" not in source.parts:
                    target = Path(self.build_lib, "worker", "_data", source)
                    self.mkpath(str(target.parent))
                    self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildWithData})
