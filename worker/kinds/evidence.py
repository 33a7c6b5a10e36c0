"""Evidence for an explanation: the course's nearest chunks and summaries, reranked to 5,
then up to 3 other questions of the course with a ready explanation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import openai
import structlog
from pgvector import Vector

from worker.config import EvidenceSettings, RerankSettings
from worker.kinds.textcap import clip
from worker.queries import q
from worker.registry import JobConnection

log = structlog.get_logger("worker.evidence")

# a document title as the prompt shows it
TITLE_CHARS = 120


@dataclass(frozen=True)
class Item:
    kind: str  # chunk | summary | question
    ref: int
    title: str
    text: str
    similarity: float

    def brief(self, rank: int) -> dict[str, Any]:
        return {"type": self.kind, "id": self.ref, "rank": rank,
                "similarity": round(self.similarity, 4)}


class Reranker(Protocol):
    name: str

    async def order(self, query: str, texts: list[str], top: int) -> list[int]:
        """Indices of `texts`, best first, at most `top`."""
        ...


class VectorOrder:
    """No reranker configured: the candidates stay in vector-similarity order."""

    name = "vector"

    async def order(self, query: str, texts: list[str], top: int) -> list[int]:
        return list(range(min(top, len(texts))))


class HttpReranker:
    """A /v1/rerank endpoint (llama.cpp server, vLLM, Jina/Cohere style) with a
    cross-encoder such as bge-reranker-v2-m3."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: float) -> None:
        self.name = f"rerank:{model}"
        self._model = model
        # the openai SDK's generic POST: same HTTP stack, timeouts and errors as the models
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "unused",
                                          timeout=timeout, max_retries=0)

    async def order(self, query: str, texts: list[str], top: int) -> list[int]:
        body = {"model": self._model, "query": query, "documents": texts, "top_n": top}
        reply: Any = await self._client.post("/rerank", body=body, cast_to=object)
        ranked = sorted(reply["results"], key=lambda r: -float(r["relevance_score"]))
        return [int(r["index"]) for r in ranked if 0 <= int(r["index"]) < len(texts)][:top]


def build_reranker(settings: RerankSettings) -> Reranker:
    if not settings.base_url:
        return VectorOrder()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return HttpReranker(settings.base_url, settings.model, key, settings.timeout)


async def _rerank(reranker: Reranker, query: str, items: list[Item], top: int
                  ) -> tuple[list[Item], str]:
    if len(items) <= 1 or isinstance(reranker, VectorOrder):
        return items[:top], VectorOrder.name
    try:
        order = await reranker.order(query, [i.text for i in items], top)
    except (openai.OpenAIError, KeyError, ValueError, TypeError) as exc:
        # evidence in vector order is still evidence; the job records the fallback
        log.warning("rerank_failed", error=str(exc))
        return items[:top], f"vector (fallback: {reranker.name} failed)"
    return [items[i] for i in order], reranker.name


@dataclass(frozen=True)
class Evidence:
    material: list[Item]
    questions: list[Item]
    reranker: str

    def empty(self) -> bool:
        return not self.material and not self.questions

    def prompt_text(self) -> str:
        lines = []
        for n, item in enumerate([*self.material, *self.questions], 1):
            # another question's explanation was written by a model, not by the course:
            # the prompt says so, so it is weighed below the material
            label = {"chunk": "문서", "summary": "문서 요약",
                     "question": "관련 문제와 그 AI 해설, 검증되지 않음"}[item.kind]
            lines.append(f"[자료 {n}] ({label}: {item.title})\n{item.text}")
        return "\n\n".join(lines)

    def record(self) -> dict[str, Any]:
        return {"reranker": self.reranker,
                "material": [i.brief(n) for n, i in enumerate(self.material, 1)],
                "questions": [i.brief(n) for n, i in enumerate(self.questions, 1)]}


async def gather(conn: JobConnection, question: dict[str, Any], embedding: Vector,
                 reranker: Reranker, limits: EvidenceSettings) -> Evidence:
    """Evidence for `question`, searched with its `embedding`."""

    params = {"course_id": question["course_id"], "embedding": embedding,
              "id": question["id"], "limit": limits.candidates}
    chunks = await (await conn.execute(q("evidence_chunks"), params)).fetchall()
    summaries = await (await conn.execute(q("evidence_summaries"), params)).fetchall()
    material = sorted(
        [Item("chunk", r["id"], clip(r["title"], TITLE_CHARS),
               clip(r["content"], limits.item_chars), r["similarity"]) for r in chunks]
        + [Item("summary", r["id"], clip(r["title"], TITLE_CHARS),
                clip(r["ai_summary"], limits.item_chars), r["similarity"]) for r in summaries],
        key=lambda item: -item.similarity,
    )
    query = question["embedding_text"]
    material, used = await _rerank(reranker, query, material, limits.material_top)

    related = await (await conn.execute(q("evidence_questions"),
                                        {**params, "limit": max(limits.candidates // 2, 1)})
                     ).fetchall()
    others = [Item("question", r["id"], f"문제 {r['id']}",
                   clip(f"문제: {r['question_text']}\n정답: {r['correct_choice']}번\n"
                        f"AI 해설: {r['ai_explanation']}", limits.item_chars), r["similarity"])
              for r in related]
    others, used_q = await _rerank(reranker, query, others, limits.questions_top)
    return Evidence(material, others, used if material else used_q)
