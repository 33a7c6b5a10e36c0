"""The settings root: the documented variables reach their sections, `.env` is read, overrides
merge field by field, and the offline stack's overrides leave the operator's tuning alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from worker.config import load_settings
from worker.offline.servers import CHAT_ALIAS, EMBED_DIM, LocalServer, offline_overrides


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No variable of the developer's shell and no `.env` of the checkout take part."""
    for name in list(os.environ):
        if name.startswith(("WORKER_", "OPENAI_", "PROMPT_VERSION")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_each_section_reads_its_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "OPENAI_BASE_URL": "http://chat/v1", "OPENAI_API_KEY": "sk-secret",
        "WORKER_LLM_TIMEOUTS": "explanation=12", "WORKER_EMBED_DIM": "384",
        "WORKER_EVIDENCE_MATERIAL_TOP": "2", "WORKER_RERANK_BASE_URL": "http://rerank/v1",
        "PROMPT_VERSION": "3", "PROMPT_VERSION_WEAKNESS_ANALYSIS": "1",
        "WORKER_PROMPTS_DIR": "/srv/prompts", "WORKER_OFFLINE_MODEL": "qwen2.5-coder-1.5b",
        "WORKER_MODELS_DIR": "/srv/models", "WORKER_POLL_INTERVAL": "0.7",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.models.openai_base_url == "http://chat/v1"
    assert "sk-secret" not in repr(settings)
    assert settings.models.timeout_for("explanation") == 12.0
    assert settings.models.timeout_for("embedding") == 15.0
    assert settings.models.embed_dim == 384
    assert settings.evidence.material_top == 2 and settings.evidence.questions_top == 3
    assert settings.rerank.base_url == "http://rerank/v1"
    assert settings.prompts.version_for("weakness_analysis") == "1"
    assert settings.prompts.version_for("explanation") == "3"
    assert settings.prompts.directory == Path("/srv/prompts")
    assert settings.offline_model == "qwen2.5-coder-1.5b"
    assert settings.models_dir == Path("/srv/models")
    assert settings.poll_interval == 0.7


def test_dotenv_is_read_and_the_environment_wins_over_it(
    monkeypatch: pytest.MonkeyPatch, clean_environment: Path
) -> None:
    (clean_environment / ".env").write_text(
        "WORKER_LLM_MODEL=from-dotenv\nWORKER_EMBED_DIM=384\nPROMPT_VERSION_EXPLANATION=2\n"
        "WORKER_EVIDENCE_ITEM_CHARS=300\nWORKER_POLL_INTERVAL=3\n", encoding="utf-8")
    monkeypatch.setenv("WORKER_EMBED_DIM", "512")
    settings = load_settings()
    assert settings.models.llm_model == "from-dotenv"
    assert settings.models.embed_dim == 512
    assert settings.prompts.version_for("explanation") == "2"
    assert settings.evidence.item_chars == 300
    assert settings.poll_interval == 3.0


def test_a_section_override_merges_over_the_environment(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv("WORKER_LLM_MODEL", "from-env")
    monkeypatch.setenv("WORKER_EMBED_DIM", "384")
    settings = load_settings(models={"llm_model": "overridden"}, poll_interval=0.5)
    assert settings.models.llm_model == "overridden"
    assert settings.models.embed_dim == 384
    assert settings.poll_interval == 0.5


def test_a_bad_value_names_the_section_and_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_EMBED_DIM", "many")
    with pytest.raises(ValueError, match=r"models\.embed_dim"):
        load_settings()


def _server(url: str) -> Any:
    return LocalServer("local", None, url, Path("log"))  # no process: only its URL is read


def test_offline_overrides_point_at_the_local_servers_but_keep_explicit_tuning(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_LLM_GATE_CAPACITY", "2")
    monkeypatch.setenv("WORKER_EVIDENCE_MATERIAL_TOP", "5")
    monkeypatch.setenv("WORKER_LLM_MODEL", "someone-elses-model")
    configured = load_settings()
    overrides = offline_overrides(_server("http://chat/v1"), _server("http://embed/v1"),
                                  configured)
    settings = load_settings(**overrides)
    assert settings.models.llm_model == CHAT_ALIAS
    assert settings.models.openai_base_url == "http://chat/v1"
    assert settings.models.embed_base_url == "http://embed/v1"
    assert settings.models.embed_dim == EMBED_DIM and settings.models.embed_input_type
    assert settings.models.llm_gate_capacity == 2
    assert settings.models.timeout_for("explanation") == 240.0
    assert settings.evidence.material_top == 5 and settings.evidence.questions_top == 1


def test_offline_overrides_run_an_mlx_directory_in_process() -> None:
    overrides = offline_overrides(None, _server("http://embed/v1"), load_settings(),
                                  mlx_model=Path("/cache/qwen-mlx"))
    settings = load_settings(**overrides)
    assert settings.models.llm_backend == "mlx" and settings.models.mlx_model == "/cache/qwen-mlx"
    assert settings.models.chat_endpoint() == "mlx" and settings.models.llm_gate_capacity == 1
    assert settings.models.timeout_for("explanation") == 900.0
    assert settings.models.embed_base_url == "http://embed/v1"


def test_the_offline_chat_model_is_mlx_on_apple_silicon_and_llama_cpp_elsewhere(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.offline import stack

    monkeypatch.setattr(stack, "apple_silicon", lambda: False)
    assert stack.local_llm(load_settings()) == "llama.cpp"
    monkeypatch.setattr(stack, "apple_silicon", lambda: True)
    assert stack.local_llm(load_settings()) == "mlx"
    # WORKER_OFFLINE_LLM forces either; WORKER_LLM_BACKEND=mlx asks for ours unless it
    # names a model of its own; a configured chat endpoint means no local LLM
    monkeypatch.setenv("WORKER_OFFLINE_LLM", "llama.cpp")
    assert stack.local_llm(load_settings()) == "llama.cpp"
    assert stack.local_llm(load_settings(offline_llm="mlx")) == "mlx"
    assert stack.local_llm(load_settings(models={"llm_backend": "mlx"})) == "mlx"
    assert stack.local_llm(load_settings(models={"llm_backend": "mlx", "mlx_model": "/m"})) is None
    assert stack.local_llm(load_settings(models={"openai_base_url": "http://h/v1"})) is None


def test_with_a_remote_chat_model_only_the_embeddings_are_local() -> None:
    overrides = offline_overrides(None, _server("http://embed/v1"), load_settings())
    settings = load_settings(**overrides)
    assert settings.models.openai_base_url is None
    assert settings.models.embed_base_url == "http://embed/v1"
    assert settings.evidence.material_top == 5


@pytest.mark.parametrize("grace", ["0.5", "59"])
def test_an_unknown_kind_grace_under_a_minute_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                         grace: str) -> None:
    """The sweep refuses a grace under a minute (queue.fail_unknown_kinds); say so at start-up
    rather than fail every heartbeat."""
    monkeypatch.setenv("WORKER_UNKNOWN_KIND_GRACE", grace)
    with pytest.raises(ValueError, match="unknown_kind_grace"):
        load_settings()
    monkeypatch.setenv("WORKER_UNKNOWN_KIND_GRACE", "0")
    assert load_settings().unknown_kind_grace == 0


def test_rate_limits_are_read_and_a_bad_one_is_refused(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    from worker.models.ratelimit import RateLimit, parse_rate

    assert parse_rate("500/min") == (500, 60.0)
    assert parse_rate("10/5s") == (10, 5.0)
    assert parse_rate("3/h") == (3, 3600.0)
    limit = RateLimit.of("api gpt", "500/min", "200000/min")
    assert limit is not None and (limit.requests, limit.tokens, limit.window) == (
        500, 200000, 60.0)
    assert RateLimit.of("api gpt", None, None) is None
    with pytest.raises(ValueError, match="share a window"):
        RateLimit.of("api gpt", "500/min", "1000/s")
    monkeypatch.setenv("WORKER_CHAT_RATE_LIMIT", "500 per minute")
    with pytest.raises(ValueError, match="chat_rate_limit"):
        load_settings()
    monkeypatch.setenv("WORKER_CHAT_RATE_LIMIT", "500/min")
    assert load_settings().models.chat_rate_limit == "500/min"


def test_a_validation_error_names_the_environment_variable() -> None:
    from worker.config import variable_for

    assert variable_for(("database_url",)) == "DATABASE_URL"
    assert variable_for(("concurrency", "embedding")) == "WORKER_CONCURRENCY"
    assert variable_for(("models", "llm_gate_capacity")) == "WORKER_LLM_GATE_CAPACITY"
    assert variable_for(("models", "openai_api_key")) == "OPENAI_API_KEY"
    assert variable_for(("evidence", "material_top")) == "WORKER_EVIDENCE_MATERIAL_TOP"
    assert variable_for(("prompts", "per_kind", "explanation")) == "PROMPT_VERSION_EXPLANATION"
