"""The MLX conversion cache: a directory is used only while it matches its manifest, and a
conversion that fails leaves nothing behind that could be mistaken for a model.

gguf2mlx itself is replaced by a function writing two files (the real conversion runs in
tests/acceptance/test_mlx_model.py); the cache logic around it is the real one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import ConfigError
from worker.offline import mlx_model as cache

KEY = "qwen2.5-coder-0.5b"


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    made: list[Path] = []

    def convert(gguf: Path, into: Path, options: tuple[str, ...]) -> None:
        into.mkdir()
        (into / "config.json").write_text("{}")
        (into / "model.safetensors").write_bytes(b"weights")
        made.append(into)

    monkeypatch.setattr(cache, "_convert", convert)
    return made


def test_a_conversion_is_made_once_and_then_reused(tmp_path: Path,
                                                   conversions: list[Path]) -> None:
    first = cache.mlx_model(KEY, tmp_path / "m.gguf", tmp_path / "cache")
    again = cache.mlx_model(KEY, tmp_path / "m.gguf", tmp_path / "cache")
    assert first == again and len(conversions) == 1
    assert (first / "manifest.json").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".lock", first.name]


def test_other_options_are_another_directory(tmp_path: Path, conversions: list[Path]) -> None:
    a = cache.mlx_model(KEY, tmp_path / "m.gguf", tmp_path)
    b = cache.mlx_model(KEY, tmp_path / "m.gguf", tmp_path, options=("--dtype", "float16"))
    assert a != b and len(conversions) == 2


@pytest.mark.parametrize("damage", ["changed", "missing", "extra", "no_manifest"])
def test_a_directory_that_does_not_match_its_manifest_is_converted_again(
    tmp_path: Path, conversions: list[Path], damage: str
) -> None:
    model = cache.mlx_model(KEY, tmp_path / "m.gguf", tmp_path)
    weights = model / "model.safetensors"
    if damage == "changed":
        weights.write_bytes(b"weightz")
    elif damage == "missing":
        weights.unlink()
    elif damage == "extra":
        (model / "stray.bin").write_bytes(b"")
    else:
        (model / "manifest.json").unlink()
    assert cache.mlx_model(KEY, tmp_path / "m.gguf", tmp_path) == model
    assert len(conversions) == 2 and weights.read_bytes() == b"weights"


def test_a_failed_conversion_leaves_nothing_behind(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(gguf: Path, into: Path, options: tuple[str, ...]) -> None:
        into.mkdir()
        (into / "model.safetensors").write_bytes(b"wei")
        raise ConfigError("gguf2mlx could not convert m.gguf (exit 1)")

    monkeypatch.setattr(cache, "_convert", half_written)
    with pytest.raises(ConfigError, match="could not convert"):
        cache.mlx_model(KEY, tmp_path / "m.gguf", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]
