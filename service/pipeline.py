"""The demo chat pipeline — classify → retrieve → generate — each stage timed and recorded as an event."""

from __future__ import annotations

from dataclasses import dataclass

from querylog.logging.tracker import TrackedQuery
from querylog.service.generation import Generator, LocalGenerator
from querylog.service.intents import classify
from querylog.service.retrieval import Hit, Retriever

__all__ = ["ChatAnswer", "ChatPipeline"]


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    intent: str
    confidence: float
    answer: str
    sources: tuple[Hit, ...]
    cache_hit: bool
    model: str | None
    quality_score: float | None


class ChatPipeline:
    """Answers one tracked query. Stateless apart from the retriever's cache; safe to share across threads."""

    def __init__(self, retriever: Retriever | None = None, generator: Generator | None = None) -> None:
        self.retriever = retriever or Retriever.from_bundled()
        self.generator = generator or LocalGenerator()

    def answer(self, q: TrackedQuery, *, k: int = 3) -> ChatAnswer:
        with q.stage("classify"):
            verdict = classify(q.text)
            q.classified(str(verdict.intent), verdict.confidence)
        with q.stage("search"):
            found = self.retriever.search(q.text, k=k)
            q.searched(len(found.docs), cache_hit=found.cache_hit, top_score=found.top_score)
        with q.stage("generate"):
            generation = self.generator.generate(q.text, str(verdict.intent), found.docs)
            q.responded(
                system=generation.system,
                model=generation.model,
                input_tokens=generation.input_tokens,
                output_tokens=generation.output_tokens,
                quality_score=generation.quality_score,
                answer_chars=len(generation.answer),
            )
        return ChatAnswer(
            intent=str(verdict.intent),
            confidence=verdict.confidence,
            answer=generation.answer,
            sources=found.docs,
            cache_hit=found.cache_hit,
            model=generation.model,
            quality_score=generation.quality_score,
        )
