"""The demo chat pipeline — classify → retrieve → generate — each stage timed and recorded as an event."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from querylog.logging.tracker import TrackedQuery
from querylog.service.generation import Generator, LocalGenerator
from querylog.service.intents import classify
from querylog.service.retrieval import Hit, Retriever
from querylog.service.tracing import NULL_TRACE, LangfuseTracing, QueryTrace

__all__ = ["ChatAnswer", "ChatPipeline", "response_type"]

#: The kind of answer each intent gets, as the service this demo stands for labelled its responses.
_RESPONSE_TYPES = {
    "stock_analysis": "company_analysis",
    "company_info": "company_profile",
    "news_inquiry": "news_summary",
    "market_overview": "market_overview",
}


def response_type(intent: str, found_documents: bool) -> str:
    """``company_analysis``, ``news_summary``, …; ``no_sources`` when retrieval found nothing to ground it on."""
    if not found_documents:
        return "no_sources"
    return _RESPONSE_TYPES.get(intent, "general")


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
    """Answers one tracked query. Stateless apart from the retriever's cache; safe to share across threads.

    With `tracing`, each query is a Langfuse trace whose id is the query's `trace_id` (set here if the caller
    did not pass one to `tracker.query`, in which case the events emitted before that lack it), and the
    answer step is a generation observation with the model, token usage, input and output.
    """

    def __init__(
        self,
        retriever: Retriever | None = None,
        generator: Generator | None = None,
        *,
        tracing: LangfuseTracing | None = None,
    ) -> None:
        self.retriever = retriever or Retriever.from_bundled()
        self.generator = generator or LocalGenerator()
        self.tracing = tracing

    def answer(self, q: TrackedQuery, *, k: int = 3) -> ChatAnswer:
        with self._trace(q) as trace:
            with q.stage("classify"):
                verdict = classify(q.text)
                q.classified(str(verdict.intent), verdict.confidence)
            with q.stage("search"):
                found = self.retriever.search(q.text, k=k)
                q.searched(len(found.docs), cache_hit=found.cache_hit, top_score=found.top_score, sources=found.docs)
            prompt = {"query": q.text, "intent": str(verdict.intent), "documents": [h.title for h in found.docs]}
            with q.stage("generate"), trace.generation(input=prompt) as observed:
                generation = self.generator.generate(q.text, str(verdict.intent), found.docs)
                observed.record(
                    model=generation.model,
                    output=generation.answer,
                    input_tokens=generation.input_tokens,
                    output_tokens=generation.output_tokens,
                    system=generation.system,
                )
                q.responded(
                    system=generation.system,
                    model=generation.model,
                    input_tokens=generation.input_tokens,
                    output_tokens=generation.output_tokens,
                    quality_score=generation.quality_score,
                    answer=generation.answer,
                    response_type=response_type(str(verdict.intent), bool(found.docs)),
                    finish_reason=generation.finish_reason,
                    response_model=generation.response_model,
                    cache_read_tokens=generation.cache_read_tokens,
                    reasoning_tokens=generation.reasoning_tokens,
                )
            trace.finish(generation.answer)
        return ChatAnswer(
            intent=str(verdict.intent),
            confidence=verdict.confidence,
            answer=generation.answer,
            sources=found.docs,
            cache_hit=found.cache_hit,
            model=generation.model,
            quality_score=generation.quality_score,
        )

    def _trace(self, q: TrackedQuery) -> AbstractContextManager[QueryTrace]:
        if self.tracing is None:
            return nullcontext(NULL_TRACE)
        trace_id = q.trace_id or self.tracing.new_trace_id()
        q.set_trace_id(trace_id)
        return self.tracing.trace(
            trace_id,
            name="chat",
            input=q.text,
            user_id=q.user_id,
            session_id=q.session_id,
            metadata={"query_id": q.query_id},
        )
