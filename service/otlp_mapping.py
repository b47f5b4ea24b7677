"""OTLP spans to querylog events: a GenAI span becomes one tracked query (received → [searched] → generated →
completed or failed).

Two conventions are read, with the older names common instrumentations still emit:

- OpenTelemetry GenAI: ``gen_ai.operation.name``, ``gen_ai.provider.name`` / ``gen_ai.system``,
  ``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens`` (and
  ``prompt_tokens`` / ``completion_tokens``), ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON), or
  OpenLLMetry's ``gen_ai.prompt.N.content`` / ``gen_ai.completion.N.content``, ``gen_ai.response.finish_reasons``,
  ``error.type``; a retrieval span is ``gen_ai.operation.name = retrieval``.
- OpenInference (Phoenix): ``openinference.span.kind`` (``LLM``, ``RETRIEVER``), ``llm.model_name`` (and the
  request's ``model`` in ``llm.invocation_parameters``), ``llm.token_count.prompt`` / ``completion``,
  ``input.value``, ``output.value``,
  ``llm.input_messages.N.message.role|content``, ``retrieval.documents.N.document.id|content|score``.

The Langfuse SDK's (v3+) generations (``langfuse.observation.type = generation``) are read under the GenAI names:
its model, input, output, usage and cost details, first token's time and ERROR level (`_from_langfuse`).

Prompts and answers recorded as span events (``gen_ai.content.prompt`` / ``completion``, ``gen_ai.user.message`` /
``gen_ai.choice``, ``gen_ai.client.inference.operation.details``) are read when the span has no attribute for them;
a failure's type and message come from ``error.type``, else from the recorded ``exception`` event.

A query is a GenAI span with no GenAI span above it in the export. One inside another (an SDK's span under a
framework's, an agent's calls) is a step of that query: its tokens add up to the query's when the outer span has
none, its model and answer stand in for the outer's missing ones (the last step's), and the first step's question
for a missing question. Its trace's spans above a query give what the query span lacks: the session and user (the
nearest span naming them, often the request's root), the question (an OpenInference CHAIN or AGENT's
``input.value``: the LLM span's input is then a prompt template around it), and, for a trace's only query, its
time bounds (the root span's), widened to take in the query's search steps: its stages add up to at most its
latency.

Session and user: ``session.id`` / ``user.id`` (also ``langfuse.*``, ``enduser.id``, ``gen_ai.conversation.id`` and
OpenLLMetry's ``traceloop.association.properties.*``). The span's trace id is the events' ``trace_id``; the
resource's ``service.name``, ``deployment.environment(.name)`` and ``service.version`` are the events' service, env
and release; ``querylog.intent`` (and ``querylog.intent.confidence``), on the span or one above it, its intent. A
retrieval span fills the search step of the query of its trace that started next after it (else the last one).
Other spans are skipped and counted by reason on /metrics, never an error.

Event ids are derived from the span id, so an export sent twice adds nothing the second time.
"""

from __future__ import annotations

import json
import math
import re
import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, Final, Literal

import orjson
import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from querylog.logging.events import EVENT_CLASSES, MAX_AHEAD, NOT_CAPTURED, EventValidationError, shows_nothing

__all__ = [
    "INTENT_ATTRIBUTE",
    "INTENT_CONFIDENCE_ATTRIBUTE",
    "NESTED_SPAN",
    "NOT_CAPTURED",
    "REFUSED",
    "Mapped",
    "QueryGroup",
    "map_export",
]

#: The span attributes an app names its query's intent and the classifier's confidence by (0 to 1).
INTENT_ATTRIBUTE: Final = "querylog.intent"
INTENT_CONFIDENCE_ATTRIBUTE: Final = "querylog.intent.confidence"
#: Set on an event's fields when the span says something no event can hold (an unreadable document list, a first
#: token after the call ended): why its span is refused, as the schema's refusals are (`partial_success`).
REFUSED: Final = "querylog.refused"
#: Why a GenAI span inside another is not a query of its own (it is a step of that one): a skip reason on /metrics.
NESTED_SPAN: Final = "genai_span_inside_another"
#: Spans that start before this (2000-01-01, in Unix ns) are refused: an exporter that sends milliseconds or
#: microseconds where OTLP wants nanoseconds would otherwise file its queries under January 1970.
EARLIEST_START_NS: Final = 946_684_800 * 10**9
_RETRIEVAL_OPERATIONS: Final = frozenset({"retrieval", "retrieve", "search"})
_SKIPPED_GENAI_OPERATIONS: Final = frozenset({"embeddings", "execute_tool", "create_agent"})
#: OpenInference's span kinds that are no step of ours, each a `reason` of its own on `/metrics`; any other value
#: (a client's own) is counted as ``openinference_other``: a label per value would let a client grow the series.
_OPENINFERENCE_SKIPPED: Final = frozenset(
    {"chain", "tool", "embedding", "reranker", "guardrail", "evaluator", "prompt", "unknown"}
)


@dataclass(frozen=True, slots=True)
class QueryGroup:
    """One query's events (its retrievals' ``search_completed`` among them) and how many GenAI spans nested in its
    span it read as its steps (counted as skipped: refused with the query if the query is)."""

    events: list[dict[str, Any]]
    steps: int = 0


@dataclass
class Mapped:
    """The events of an export, one group per GenAI span, and what was left out of it (reason → spans)."""

    groups: list[QueryGroup] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for group in self.groups for event in group.events]

    def refuse_query(self, reason: str, *, steps: int, retrievals: int) -> None:
        """Count a refused query with every span it was read from: its own, its `steps` (no longer skipped as read
        into it) and its `retrievals` not refused already."""
        self.rejected[reason] += 1 + steps + retrievals
        self.skipped[NESTED_SPAN] -= steps
        if self.skipped[NESTED_SPAN] <= 0:
            del self.skipped[NESTED_SPAN]


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return bytes(v.bytes_value)  # an id's hex digits (`_text`), a text's UTF-8 (`_str`), never a number
    return getattr(v, kind)


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


def _text(value: Any) -> Any:
    """An id sent as bytes as its hex digits; any other value as it is. Not for counts (``bytesValue`` ``AAEC``
    would read as the count 102), nor for text (`_str`)."""
    return value.hex() if isinstance(value, bytes) else value


def _str(attrs: dict[str, Any], *names: str) -> str | None:
    """A text attribute (a name, a question, an error message); sent as bytes, their UTF-8 text, which redaction
    then reads as it reads any (their hex digits would carry a phone number past it); sent as a number, its digits
    (``querylog.intent = 7`` is the intent "7", as /v1/events would be told it). True, false, lists and maps are
    no text: left out, as not given."""
    for name in names:
        value = attrs.get(name)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if (number := _digits(value)) is not None:
            return number
        if isinstance(value, str) and value.strip():
            return value
    return None


def _id(attrs: dict[str, Any], *names: str) -> str | None:
    """An id attribute: text, its bytes as hex digits, or a number as its digits (``session.id = 12345``: an app's
    database key)."""
    for name in names:
        value = _text(attrs.get(name))
        if (number := _digits(value)) is not None:
            return number
        if isinstance(value, str) and value.strip():
            return value
    return None


def _digits(value: Any) -> str | None:
    """A number (not true or false) as its digits: ``7``, ``2.5``; a whole float as a whole number (``3.0``: 3)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _number(attrs: dict[str, Any], name: str) -> float | None:
    """The attribute as a number; None when it is not there; NaN, which the event refuses (naming the field), when
    it is there but no number: read as "not given", a confidence would become 1.0, a cost the price table's, without
    a word."""
    value = attrs.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return math.nan
    try:
        return float(value)
    except ValueError:
        return math.nan


def _int(attrs: dict[str, Any], *names: str) -> int | float | None:
    """The first of `names` there, as a count; None when none is there; NaN, which the event refuses (naming the
    field), when it is there but no count (-5, 2.5, inf, "many", true): left out, the tokens would go unpriced
    without a word."""
    for name in names:
        value = attrs.get(name)
        if value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, float) and value.is_integer() and value >= 0:  # some SDKs send counts as doubles
            return int(value)
        if isinstance(value, str) and value.isdecimal():  # what int() reads: not "²", which isdigit() takes
            return int(value)
        return math.nan
    return None


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(nanos: int) -> datetime:
    # A datetime, not text: the ingest path takes it as it is (no format here, no parse there). Cut to the
    # microsecond, exactly: through a float it was rounded, and a span ending at 23:59:59.9999996 fell on the next day.
    return _EPOCH + timedelta(microseconds=nanos // 1000)


def _indexed(attrs: dict[str, Any], prefix: str, suffix: str) -> list[tuple[int, Any]]:
    """(N, value) of attributes named ``{prefix}N{suffix}``, by N."""
    found = []
    for key, value in attrs.items():
        if key.startswith(prefix) and key.endswith(suffix):
            middle = key[len(prefix) : len(key) - len(suffix)]
            if middle.isdecimal():
                found.append((int(middle), value))
    return sorted(found)


def _parts_text(parts: Any) -> str | None:
    """The text parts of a message's content, joined: the GenAI conventions' (``{"type": "text", "content"}``) or
    OpenAI's (``{"type": "text", "text"}``); images and other parts are left out."""
    if not isinstance(parts, list):
        return None
    texts = [
        text
        for p in parts
        if isinstance(p, dict) and p.get("type", "text") == "text"
        for text in (p.get("content"), p.get("text"))
        if isinstance(text, str)
    ]
    return "\n".join(texts) or None


def _message_text(message: Any) -> str | None:
    """The text of one message in the GenAI conventions' JSON shape (``parts`` with text) or the older flat one
    (``content``: text, or a list of parts as OpenAI's API takes it)."""
    if not isinstance(message, dict):
        return None
    if isinstance(message.get("content"), str):
        return str(message["content"])
    return _parts_text(message.get("content")) or _parts_text(message.get("parts"))


def _plain(value: Any) -> str | None:
    """A text value as it is (a ``bytesValue`` as its UTF-8 text); None if blank or no text."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value) if isinstance(value, str) and value.strip() else None


def _invoked_model(attrs: dict[str, Any]) -> str | None:
    """The model an OpenInference span's request asked for: ``model`` in ``llm.invocation_parameters`` (JSON)."""
    text = _plain(attrs.get("llm.invocation_parameters"))
    if text is None or not text.lstrip().startswith("{"):
        return None
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return _str(parsed, "model") if isinstance(parsed, dict) else None


def _written_text(value: Any, role: str | None = None) -> str | None:
    """A text attribute as instrumentations write it: plain text; or JSON of a message list (conventions 1.26's
    ``gen_ai.prompt``: the last message of `role`, or every message without one); or JSON of a content part list
    (OpenLLMetry's ``gen_ai.prompt.N.content`` when a message held an image): its text parts."""
    text = _plain(value)  # a ``bytesValue``: its UTF-8 text, as `_str` reads one
    if text is None or text.lstrip()[:1] not in ("[", "{"):
        return text
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text  # text that starts like JSON
    return _held_text(parsed, role) or text


def _held_text(parsed: Any, role: str | None) -> str | None:
    """The text parsed JSON holds: a message list's (the last message of `role`, or every message without one), a
    request body's messages (Langfuse's input when tools are passed: ``{"tools", "messages"}``), a content part
    list's text parts; None for any other shape."""
    if isinstance(parsed, dict) and isinstance(parsed.get("messages"), list):
        parsed = parsed["messages"]
    items = [parsed] if isinstance(parsed, dict) else parsed
    if not (isinstance(items, list) and items and all(isinstance(i, dict) for i in items)):
        return None
    if any("role" in i for i in items):
        chosen = [i for i in items if role is None or i.get("role") == role]
        texts = [t for m in (chosen[-1:] if role is not None else chosen) if (t := _message_text(m))]
        return "\n".join(texts) or None
    return _parts_text(items)


#: The keys of a JSON ``input.value`` / ``output.value`` object that hold its text (a LangChain chain invoked with
#: ``{"question", "chat_history"}``, a chain's ``{"answer": …}``), in the order they are looked for.
_IO_KEYS: Final = {
    "input": ("question", "input", "query", "prompt", "text", "message"),
    "output": ("answer", "output", "text", "content", "result", "response"),
}


def _io_value(attrs: dict[str, Any], which: Literal["input", "output"], *, raw: bool = True) -> str | None:
    """OpenInference's ``input.value`` / ``output.value``: text as it is; JSON (``{which}.mime_type`` is
    application/json) as the text it holds: a key of `_IO_KEYS`, an OpenAI response's first choice, messages
    (`_held_text`). JSON holding none of those is returned as it is with `raw`, else None (no question)."""
    text = _str(attrs, f"{which}.value")
    if text is None or _str(attrs, f"{which}.mime_type") != "application/json":
        return text
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    found = _plain(parsed)
    if isinstance(parsed, dict):
        found = next((v for key in _IO_KEYS[which] if (v := _plain(parsed.get(key))) is not None), None)
        choices, generations = parsed.get("choices"), parsed.get("generations")
        if found is None and isinstance(choices, list) and choices and isinstance(choices[0], dict):
            found = _message_text(choices[0].get("message"))
        if found is None and isinstance(generations, list) and generations and isinstance(generations[0], list):
            first = generations[0][0] if generations[0] else None  # LangChain's LLMResult: the first generation
            found = _plain(first.get("text")) if isinstance(first, dict) else None
        if found is None and (choices is not None or generations is not None):
            return None  # a model's response without text (a step that calls a tool): no answer, not its JSON
    found = found or _held_text(parsed, "user" if which == "input" else "assistant")
    return found or (text if raw else None)


def _messages(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:  # orjson refuses a lone surrogate (``\ud800``), which the event stores as U+FFFD: the rest is text
                raw = json.loads(raw)
            except (ValueError, RecursionError):
                return []
    return [m for m in raw if isinstance(m, dict)] if isinstance(raw, list) else []


def _last_user_text(attrs: dict[str, Any]) -> str | None:
    for message in reversed(_messages(attrs.get("gen_ai.input.messages"))):
        if message.get("role") == "user" and (text := _message_text(message)):
            return text
    roles = dict(_indexed(attrs, "gen_ai.prompt.", ".role"))
    for n, content in reversed(_indexed(attrs, "gen_ai.prompt.", ".content")):
        if roles.get(n, "user") == "user" and (text := _written_text(content)):
            return text
    oi_roles = dict(_indexed(attrs, "llm.input_messages.", ".message.role"))
    for n, content in reversed(_oi_messages(attrs, "llm.input_messages.")):
        if oi_roles.get(n, "user") == "user":
            return content
    return _io_value(attrs, "input") or _written_text(attrs.get("gen_ai.prompt"), "user")


_OI_TEXT_PART: Final = re.compile(r"(\d+)\.message\.contents\.(\d+)\.message_content\.text")


def _oi_messages(attrs: dict[str, Any], prefix: str) -> list[tuple[int, str]]:
    """(N, text) of OpenInference's messages under `prefix`, by N: ``N.message.content``, or for a message of parts
    (text and images) its text parts joined, ``N.message.contents.M.message_content.text`` in M's order."""
    texts = {n: t for n, c in _indexed(attrs, prefix, ".message.content") if (t := _plain(c)) is not None}
    parts: dict[int, list[tuple[int, str]]] = {}
    for key, value in attrs.items():
        if key.startswith(prefix) and (m := _OI_TEXT_PART.fullmatch(key, len(prefix))) and (t := _plain(value)):
            parts.setdefault(int(m[1]), []).append((int(m[2]), t))
    for n, found in parts.items():
        if n not in texts and (joined := "\n".join(t for _, t in sorted(found) if t.strip())):
            texts[n] = joined
    return sorted(texts.items())


def _answer_text(attrs: dict[str, Any], output: list[dict[str, Any]]) -> str | None:
    texts = [t for m in output if (t := _message_text(m))]
    if texts:
        return "\n".join(texts)
    completions = [t for _, c in _indexed(attrs, "gen_ai.completion.", ".content") if (t := _written_text(c))]
    if completions:
        return "\n".join(completions)
    oi = [c for _, c in _oi_messages(attrs, "llm.output_messages.")]
    if oi:
        return "\n".join(oi)
    return _io_value(attrs, "output") or _written_text(attrs.get("gen_ai.completion"), "assistant")


def _finish_reason(attrs: dict[str, Any], output: list[dict[str, Any]]) -> str | None:
    reasons = attrs.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], str):
        return str(reasons[0])
    if isinstance(reasons, str) and reasons:  # the conventions say a list; some instrumentations send one string
        return reasons
    for message in output:
        if isinstance(message.get("finish_reason"), str):
            return str(message["finish_reason"])
    return _str(attrs, "gen_ai.response.finish_reason", "gen_ai.completion.0.finish_reason", "llm.finish_reason")


_TRACEBACK: Final = "Traceback (most recent call last):"


def _without_traceback(message: str) -> str:
    """A failure's message without the Python traceback some instrumentations append to it (OpenInference's
    LangChain one, in the span status): the frames name the app's files and paths, which are no error message.
    A message that is only a traceback keeps its last line, the exception."""
    if _TRACEBACK not in message:
        return message
    before, _, frames = message.partition(_TRACEBACK)
    last = next((line.strip() for line in reversed(frames.splitlines()) if line.strip()), "")
    return before.strip() or last


def _documents(attrs: dict[str, Any]) -> dict[int, Any]:
    """N → the score (or None) of every ``retrieval.documents.N.document.*`` a retrieval span describes."""
    found: dict[int, Any] = {}
    for key, value in attrs.items():
        if key.startswith("retrieval.documents.") and ".document." in key:
            middle = key[len("retrieval.documents.") : key.index(".document.")]
            if middle.isdecimal():
                n = int(middle)
                if key.endswith(".document.score") or n not in found:
                    found[n] = value if key.endswith(".document.score") else None
    return found


def _genai_documents(attrs: dict[str, Any]) -> dict[str, Any]:
    """`attrs` with the documents of the GenAI conventions' ``gen_ai.retrieval.documents`` (a JSON list of
    ``{"id", "score", …}``, as ``opentelemetry-util-genai`` writes it) as OpenInference's flat attributes, which the
    mapping reads, and how many it lists (`_LISTED`: every item is a document, whatever its shape); `attrs` as
    they are without it; with `REFUSED` when it is no JSON list."""
    listed = attrs.get("gen_ai.retrieval.documents")
    if listed is None or "retrieval.documents.0.document.id" in attrs:
        return attrs
    if isinstance(listed, str):
        try:
            listed = orjson.loads(listed)
        except orjson.JSONDecodeError:
            return {**attrs, REFUSED: "unreadable gen_ai.retrieval.documents (not JSON)"}
    if not isinstance(listed, list | tuple):  # one object, a number: no list of what the search found
        return {**attrs, REFUSED: "unreadable gen_ai.retrieval.documents (not a JSON list)"}
    flat = {**attrs, _LISTED: len(listed)}  # an empty list is a search that found nothing
    for n, document in enumerate(listed):
        if not isinstance(document, dict):  # a document as its text alone: counted, without an id
            continue
        meta: dict[str, Any] = document["metadata"] if isinstance(document.get("metadata"), dict) else {}
        # A LangChain document (Langfuse's retriever output) holds its id and title in its metadata.
        for key, value in (("id", document.get("id", meta.get("id"))), ("score", document.get("score")),
                           ("content", document.get("content", document.get("page_content")))):  # fmt: skip
            if value is not None:
                flat[f"retrieval.documents.{n}.document.{key}"] = value
        title = document.get("title") or meta.get("title")
        if isinstance(title, str):
            flat[f"retrieval.documents.{n}.document.metadata"] = orjson.dumps({"title": title}).decode()
    return flat


#: Set by `_genai_documents`: how many documents the span listed (none, maybe), so their count is known.
_LISTED: Final = "querylog.documents_listed"


def _sources(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    ids = dict(_indexed(attrs, "retrieval.documents.", ".document.id"))
    scores = dict(_indexed(attrs, "retrieval.documents.", ".document.score"))
    titles = dict(_indexed(attrs, "retrieval.documents.", ".document.metadata"))
    for n, meta in titles.items():  # OpenInference's LangChain instrumentation writes the id in the metadata only
        if n not in ids and isinstance(meta, str) and '"id"' in meta:
            try:
                held = orjson.loads(meta)
            except ValueError:
                continue
            if isinstance(held, dict) and isinstance(held.get("id"), str | int) and not isinstance(held["id"], bool):
                ids[n] = held["id"]
    found = []
    for rank, n in enumerate(sorted(ids), start=1):
        # An id is text or a whole number (its digits); anything else is kept as it came, for the event to refuse
        # naming the field: "['a', 'b']" or "None" would be stored as an id.
        doc_id = _text(ids[n])
        plain = isinstance(doc_id, str) or (isinstance(doc_id, int) and not isinstance(doc_id, bool))
        source: dict[str, Any] = {"doc_id": str(doc_id) if plain else doc_id, "rank": rank}
        score = scores.get(n)
        if score is not None:  # a number (or its text), else as it came (true is no score): the event refuses it
            number = _number({"score": score}, "score")
            source["score"] = score if math.isnan(number or 0.0) else number
        title = titles.get(n)
        if isinstance(title, str):
            try:
                meta = orjson.loads(title)  # a depth limit of its own: "[" * 100000 is refused, not a RecursionError
                if isinstance(meta, dict) and isinstance(meta.get("title"), str):
                    source["title"] = meta["title"]
            except ValueError:
                pass
        found.append(source)
    return found  # all: past MAX_SOURCES the event keeps the first and counts the rest (sources_dropped)


#: Span events that carry a prompt or an answer (the GenAI conventions' older event forms), and the attribute each
#: fills when the span has none of its own: (event name, attribute in the event, attribute it stands for).
_CONTENT_EVENTS: Final = (
    ("gen_ai.content.prompt", "gen_ai.prompt", "gen_ai.prompt"),  # conventions 1.26-1.27
    ("gen_ai.content.completion", "gen_ai.completion", "gen_ai.completion"),
    ("gen_ai.user.message", "content", "gen_ai.prompt"),  # 1.28-1.36, one event per message
    ("gen_ai.choice", "message", "gen_ai.output.messages"),
    ("gen_ai.client.inference.operation.details", "gen_ai.input.messages", "gen_ai.input.messages"),
    ("gen_ai.client.inference.operation.details", "gen_ai.output.messages", "gen_ai.output.messages"),
)


def _with_events(span: Span, attrs: dict[str, Any]) -> dict[str, Any]:
    """`attrs` and what the span's events add: the prompt and answer recorded as events, and the recorded
    exception's type and message (``exception.type``, ``exception.message``); the span's own attributes win."""
    if not span.events:
        return attrs
    merged = dict(attrs)
    for event in span.events:
        values = _attributes(event.attributes)
        if event.name == "exception":
            for key in ("exception.type", "exception.message"):
                if isinstance(values.get(key), str):
                    merged.setdefault(key, values[key])
            continue
        for name, key, stands_for in _CONTENT_EVENTS:
            value = values.get(key)
            if event.name != name or value is None or stands_for in attrs:
                continue
            if name == "gen_ai.choice":  # one choice: a message object, as JSON or a map
                if isinstance(values.get("finish_reason"), str):
                    merged.setdefault("gen_ai.response.finish_reason", values["finish_reason"])
                choice = _messages(f"[{value}]" if isinstance(value, str) else [value])
                if not choice:
                    merged.setdefault("gen_ai.completion", value)
                    continue
                value = choice
            if name == "gen_ai.user.message":  # the last user message is the question
                merged[stands_for] = value
            else:
                merged.setdefault(stands_for, value)
    return merged


#: Langfuse SDK (v3+) observation types read as GenAI operations: a generation is a query (or a step), an agent's
#: run one query whose generations are its steps, a retriever its search (its output's documents,
#: `_genai_documents`); its other types (span, chain, tool, …) are the spans around them.
_LANGFUSE_OPERATIONS: Final = {
    "generation": "chat",
    "embedding": "embeddings",
    "agent": "invoke_agent",
    "retriever": "retrieval",
}
_LANGFUSE_USAGE: Final = (
    ("gen_ai.usage.input_tokens", ("input", "prompt_tokens", "input_tokens")),
    ("gen_ai.usage.output_tokens", ("output", "completion_tokens", "output_tokens")),
    ("gen_ai.usage.cache_read.input_tokens", ("input_cache_read", "cache_read_input_tokens", "input_cached_tokens")),
)


def _json(value: Any) -> Any:
    """An attribute an SDK wrote as JSON (Langfuse's usage, cost and times), read; anything else as it is."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _from_langfuse(attrs: dict[str, Any], start_ns: int) -> dict[str, Any]:
    """A Langfuse SDK (v3+) generation's ``langfuse.observation.*`` attributes under the GenAI conventions' names: its
    type, model, input, output, usage, cost, first token's time and an ERROR level. Its own GenAI attributes win;
    a span that is no Langfuse generation is returned as it is."""
    operation = _LANGFUSE_OPERATIONS.get(_str(attrs, "langfuse.observation.type") or "")
    if operation is None:
        return attrs
    if operation == "retrieval":  # its output: the documents it found (LangChain's, or the app's own list)
        output = _json(attrs.get("langfuse.observation.output"))
        listed = output.get("documents") if isinstance(output, dict) else output
        documents = {"gen_ai.retrieval.documents": listed} if isinstance(listed, list) else {}
        return {"gen_ai.operation.name": operation, **documents, **attrs}
    found: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": attrs.get("langfuse.observation.model.name"),
        "gen_ai.prompt": attrs.get("langfuse.observation.input"),  # text, or JSON of the messages
        "gen_ai.completion": attrs.get("langfuse.observation.output"),
        # Where its OpenAI integration puts a streamed answer's finish reason (JSON text: ``"stop"``).
        "gen_ai.response.finish_reason": _json(attrs.get("langfuse.observation.metadata.finish_reason")),
    }
    usage = _json(attrs.get("langfuse.observation.usage_details"))
    if isinstance(usage, dict):
        for name, keys in _LANGFUSE_USAGE:
            found[name] = next((usage[k] for k in keys if k in usage), None)
    cost = _json(attrs.get("langfuse.observation.cost_details"))
    if isinstance(cost, dict):
        parts = [v for v in cost.values() if isinstance(v, int | float) and not isinstance(v, bool)]
        found["gen_ai.usage.cost"] = cost.get("total", sum(parts) if parts else None)
    first = _json(attrs.get("langfuse.observation.completion_start_time"))
    if isinstance(first, str):
        try:
            found["gen_ai.server.time_to_first_token"] = datetime.fromisoformat(first).timestamp() - start_ns / 1e9
        except (ValueError, TypeError):  # not a time, or one without a zone
            found["gen_ai.server.time_to_first_token"] = first  # no number: the event refuses it, naming the field
    if _str(attrs, "langfuse.observation.level") == "ERROR":  # the app marked the call failed (`_failed`)
        found["exception.message"] = attrs.get("langfuse.observation.status_message")
    return {**{k: v for k, v in found.items() if v is not None}, **attrs}


def _kind(attrs: dict[str, Any]) -> str | None:
    """``llm``, ``retrieval``, a reason to skip (``skip:…``), or None for a span that is not GenAI at all."""
    operation = _str(attrs, "gen_ai.operation.name")
    oi_kind = _str(attrs, "openinference.span.kind")
    if operation is not None:
        if operation in _RETRIEVAL_OPERATIONS:
            return "retrieval"
        if operation in _SKIPPED_GENAI_OPERATIONS:
            return f"skip:gen_ai_{operation}"
        return "llm"
    if oi_kind is not None:
        upper = oi_kind.upper()
        if upper in ("LLM", "AGENT"):  # an agent's run is one query, its LLM calls its steps (as `invoke_agent`)
            return "llm"
        if upper == "RETRIEVER":
            return "retrieval"
        kind = upper.lower()
        return f"skip:openinference_{kind if kind in _OPENINFERENCE_SKIPPED else 'other'}"
    if _str(attrs, "traceloop.span.kind") == "agent":  # OpenLLMetry's @agent: one query, as above
        return "llm"
    if _str(attrs, "gen_ai.system", "gen_ai.provider.name", "gen_ai.request.model") is not None:
        # OpenLLMetry's older spans name the call's kind apart: an embedding (an indexing job's) is not a query.
        if _str(attrs, "llm.request.type") == "embedding":
            return "skip:gen_ai_embeddings"
        return "llm"
    return None


def _service_name(resource: dict[str, Any]) -> str | None:
    # The SDKs name a service that did not name itself ``unknown_service`` (``unknown_service:python``, the
    # specification's default): that is no name, so the server's own is taken, as for an unset one.
    name = _str(resource, "service.name")
    return None if name is not None and name.startswith("unknown_service") else name


def _name(value: str | None, fallback: str) -> str:
    # As the app named itself (`chat api`, `payments/v2`), as /v1/events takes it: an event's `service` is a column
    # and a field of the Loki line, never a label. Unset or blank: the server's own.
    return value if value is not None and value.strip() else fallback


#: How far the request around a trace's one query may reach past the query's own span, either side: further, its
#: time is wrong (a start left unset, a clock of another year), and the query keeps its own bounds.
_REQUEST_SLACK_NS: Final = 86_400 * 10**9
#: How far above a query span its session, user, question and request are looked for (`_Spans.ancestors`); the
#: query a GenAI span is a step of is found at any depth (`_Spans.outer`).
MAX_ANCESTORS: Final = 64
#: A span whose parents lead back to it (a span its own parent, two spans each other's): no query can be read.
_LOOP: Final = "loop"
_Entry = tuple[Span, dict[str, Any], str | None]


@dataclass
class _Spans:
    """The spans of one export, by trace and span id: each query span's ancestors are looked up here."""

    by_id: dict[tuple[bytes, bytes], _Entry] = field(default_factory=dict)
    #: (trace, span) → the outermost GenAI span above it (None: none), or `_LOOP`; filled as spans are looked at.
    _outer: dict[tuple[bytes, bytes], _Entry | str | None] = field(default_factory=dict)

    def outer(self, span: Span) -> _Entry | str | None:
        """The outermost GenAI span above `span` (the query it is a step of), None when there is none, or `_LOOP`.
        Each span above is looked at once whatever the depth (an agent's trace may nest hundreds)."""
        trace, path, on_path = span.trace_id, list[_Entry](), {span.span_id}
        parent, above = span.parent_span_id, None  # above: the answer for the topmost span of `path`
        while parent:
            key = (trace, parent)
            entry = self.by_id.get(key)
            if entry is None:  # not in this export: the chain ends here
                break
            if key in self._outer:
                known = self._outer[key]
                above = known if known is not None else (entry if entry[2] == "llm" else None)
                break
            if parent in on_path:
                above = _LOOP
                break
            on_path.add(parent)
            path.append(entry)
            parent = entry[0].parent_span_id
        for entry in reversed(path):  # topmost first: each one's answer is the one above it, or itself
            self._outer[(trace, entry[0].span_id)] = above
            if above is None and entry[2] == "llm":
                above = entry
        return above

    def ancestors(self, span: Span) -> list[_Entry]:
        """`span`'s parent, its parent's, … as far as the export holds them (nearest first), at most
        `MAX_ANCESTORS`: a query's session, user and question are looked for in them (each query reads its list three
        times: ten thousand queries under a chain ten thousand deep would hold the server for minutes)."""
        found: list[_Entry] = []
        parent = span.parent_span_id
        while parent and len(found) < MAX_ANCESTORS and (entry := self.by_id.get((span.trace_id, parent))):
            found.append(entry)
            parent = entry[0].parent_span_id
        return found


def _time_problem(span: Span) -> str | None:
    """Why a query's or a retrieval's span has no time it can be given: unset (0), which a hand-built exporter
    sends, or milliseconds where OTLP wants nanoseconds (not a query of 1970); an end unset or before the start (a
    latency of 0 is not what the app measured). An SDK's spans always have both, the end from a monotonic clock."""
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if not start:
        return "span without a start time"
    if start < EARLIEST_START_NS:
        return "span starting before 2000: OTLP times are Unix nanoseconds"
    if end < start:
        return "span without an end time" if not end else "span ending before it started"
    return None


#: A query's start, to order a trace's queries by.
_START: Final = attrgetter("span.start_time_unix_nano")


@dataclass
class _Query:
    """A query span, with what its trace adds: its ancestors (nearest first), the GenAI spans nested in it (its
    steps: an agent's calls, an SDK's span under a framework's), and the retrieval spans it drew on."""

    span: Span
    attrs: dict[str, Any]
    resource: dict[str, Any]
    ancestors: list[tuple[Span, dict[str, Any], str | None]]
    nested: list[tuple[Span, dict[str, Any]]] = field(default_factory=list)
    retrievals: list[tuple[Span, dict[str, Any]]] = field(default_factory=list)


def map_export(request: ExportTraceServiceRequest, *, service: str, env: str) -> Mapped:
    """The events of every GenAI span of `request` that is not nested in another (see the module docstring)."""
    mapped = Mapped()
    spans = _Spans()
    llm_spans: list[tuple[Span, dict[str, Any], dict[str, Any]]] = []
    retrieval_spans: list[tuple[Span, dict[str, Any]]] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(span.trace_id) != 16 or len(span.span_id) != 8 or not (any(span.trace_id) and any(span.span_id)):
                    mapped.rejected["invalid trace or span id"] += 1
                    continue
                if (span.trace_id, span.span_id) in spans.by_id:
                    # A retry a Collector batched with the original: read once, or its tokens count twice.
                    mapped.skipped["span_repeated_in_export"] += 1
                    continue
                attrs = _from_langfuse(_attributes(span.attributes), span.start_time_unix_nano)
                kind = _kind(attrs)
                if kind in ("llm", "retrieval") and (problem := _time_problem(span)) is not None:
                    mapped.rejected[problem] += 1  # spans inside it stand alone
                    kind = None
                elif kind is None:
                    mapped.skipped["not_genai"] += 1
                spans.by_id[(span.trace_id, span.span_id)] = (span, attrs, kind)
                if kind is None:
                    continue
                if kind.startswith("skip:"):
                    mapped.skipped[kind.removeprefix("skip:")] += 1
                elif kind == "retrieval":
                    retrieval_spans.append((span, attrs))
                else:
                    llm_spans.append((span, _with_events(span, attrs), resource))
    queries: dict[tuple[bytes, bytes], _Query] = {}
    nested: list[tuple[Span, dict[str, Any], bytes]] = []
    for span, attrs, resource in llm_spans:
        outer = spans.outer(span)  # the outermost GenAI span above
        if outer is None:
            queries[(span.trace_id, span.span_id)] = _Query(span, attrs, resource, spans.ancestors(span))
        elif isinstance(outer, str):  # _LOOP
            mapped.rejected["parent spans that loop back"] += 1
        else:
            nested.append((span, attrs, outer[0].span_id))
    for span, attrs, outer_id in nested:
        queries[(span.trace_id, outer_id)].nested.append((span, attrs))
        mapped.skipped[NESTED_SPAN] += 1  # a step of that query, not a query of its own
    by_trace: dict[bytes, list[_Query]] = {}
    for query in queries.values():
        by_trace.setdefault(query.span.trace_id, []).append(query)
    # Each trace's queries by start (stable: equal starts keep their order), to find a retrieval's by bisection: a
    # trace of thousands of steps took seconds when each retrieval looked at every query.
    by_start = {trace: sorted(found, key=_START) for trace, found in by_trace.items()}
    for span, attrs in retrieval_spans:
        candidates = by_start.get(span.trace_id)
        if not candidates:
            mapped.skipped["retrieval_without_genai_span"] += 1
            continue
        # The query it served: the first to start once it had (retrieval comes before generation), else the last.
        i = bisect_left(candidates, span.start_time_unix_nano, key=_START)
        chosen = (
            candidates[i]
            if i < len(candidates)
            else candidates[bisect_left(candidates, _START(candidates[-1]), key=_START)]
        )
        chosen.retrievals.append((span, attrs))
    for query in queries.values():
        alone = len(by_trace[query.span.trace_id]) == 1
        try:
            events = _query_events(query, alone=alone, service=service, env=env)
            mapped.groups.append(QueryGroup(events, steps=len(query.nested)))
        except Exception as exc:  # a shape no rule foresaw: that query is refused and counted, never the export
            mapped.refuse_query(
                "span querylog could not read", steps=len(query.nested), retrievals=len(query.retrievals)
            )
            if type(exc).__name__ not in _UNREADABLE_LOGGED:  # once per kind of failure: the counter has every one
                _UNREADABLE_LOGGED.add(type(exc).__name__)
                _log.exception("otlp_span_unreadable", trace_id=query.span.trace_id.hex(), error=repr(exc)[:300])
    return mapped


_log = structlog.get_logger("querylog.otlp")
#: The kinds of mapping failure logged already (with their traceback): a bug to report, not a line per span.
_UNREADABLE_LOGGED: set[str] = set()


_SESSION_KEYS: Final = (
    "session.id", "langfuse.session.id", "gen_ai.conversation.id", "traceloop.association.properties.session_id",
)  # fmt: skip
_USER_KEYS: Final = ("user.id", "langfuse.user.id", "enduser.id", "traceloop.association.properties.user_id")
#: OpenInference span kinds whose ``input.value`` is the user's question (an LLM span under them sees a prompt).
_QUESTION_KINDS: Final = frozenset({"CHAIN", "AGENT"})


def _question(query: _Query) -> str | None:
    """The user's question: an OpenInference chain's or agent's input above the span (the LLM span's prompt is a
    template around it), else the span's own last user message, else its first nested step's. A text that shows
    nothing (``"\u200b"``, controls only) is passed over, as /v1/chat refuses it."""
    for _, attrs, _ in reversed(query.ancestors):
        kind = _str(attrs, "openinference.span.kind")
        if (
            kind is not None
            and kind.upper() in _QUESTION_KINDS
            and _shown(text := _io_value(attrs, "input", raw=False))
        ):
            return text
    text = _last_user_text(query.attrs)
    if not _shown(text) and query.nested:
        first = min(query.nested, key=lambda n: n[0].start_time_unix_nano)
        text = _last_user_text(first[1])
    return text if _shown(text) else None


def _shown(text: str | None) -> bool:
    return text is not None and not shows_nothing(text)


def _from_steps(query: _Query, value: Any, read: Any, *, total: bool = False, every: Any = None) -> Any:
    """`value` (the query span's own), or what its nested steps say: their sum (`total`, for tokens), or the
    last step's (for the answer, the model). `every`: which steps must each say it, else nothing is said (a cost
    two of an agent's three billed calls report is no total)."""
    if value is not None or not query.nested:
        return value
    found = [
        v for _, attrs in sorted(query.nested, key=lambda n: n[0].end_time_unix_nano) if (v := read(attrs)) is not None
    ]
    if not found or (every is not None and len(found) < sum(1 for _, attrs in query.nested if every(attrs))):
        return None
    return sum(found) if total else found[-1]


def _failed(span: Span, attrs: dict[str, Any]) -> bool:
    """Whether the span says its work failed: status ERROR, an ``error.type``, or a Langfuse ERROR level."""
    return (
        span.status.code == Status.STATUS_CODE_ERROR
        or _str(attrs, "error.type") is not None
        or _str(attrs, "langfuse.observation.level") == "ERROR"
    )


#: The response fields that say the provider billed the call.
_BILLED: Final = ("gen_ai_usage_input_tokens", "gen_ai_usage_output_tokens", "cost_usd")


def _billed(response: dict[str, Any]) -> bool:
    """Whether a failed call's response is kept: it says the provider billed it (a filtered answer: tokens or a cost
    above zero), and every value in it is one its event takes. A value it refuses would take the query's failure
    with it (a query is refused whole); a failure that says nothing billable records no response, as before."""
    if not any(isinstance(v, int | float) and v > 0 for v in (response.get(key) for key in _BILLED)):
        return False
    try:
        EVENT_CLASSES["response_generated"](**{k: v for k, v in response.items() if k != "event_type"})
    except (EventValidationError, TypeError, ValueError):
        return False
    return True


def _query_events(query: _Query, *, alone: bool, service: str, env: str) -> list[dict[str, Any]]:
    span, attrs, resource = query.span, query.attrs, query.resource
    # Span ids are unique only within a trace: the ids carry both (an export sent again maps to the same ids).
    span_id = f"{span.trace_id.hex()}-{span.span_id.hex()}"
    common: dict[str, Any] = {
        "query_id": f"otlp-{span_id}",
        "trace_id": span.trace_id.hex(),
        "service": _name(_service_name(resource), service),
        "env": _name(_str(resource, "deployment.environment.name", "deployment.environment"), env),
    }
    # Session and user: the span's own, else the nearest span above it that names them (often the request's root).
    context = [attrs, *(a for _, a, _ in query.ancestors)]
    session = next((v for a in context if (v := _id(a, *_SESSION_KEYS))), None)
    user = next((v for a in context if (v := _id(a, *_USER_KEYS))), None)
    if session:
        common["session_id"] = session
    if user:
        common["user_id"] = user
    # What the explorer and the metrics compare releases by; a whole number as its digits (`Resource.create` takes
    # ``service.version = 42``), as the tracker takes it.
    release = _id(resource, "service.version")
    if release:
        common["release"] = release
    # The intent the app gave its query (it classifies, querylog cannot guess it for any app): on the span or the
    # nearest span above it, with its confidence (1.0, the app's own label, when it gives none).
    labelled = next((a for a in context if _str(a, INTENT_ATTRIBUTE)), None)
    intent = _str(labelled, INTENT_ATTRIBUTE) if labelled is not None else None
    start, end = span.start_time_unix_nano, span.end_time_unix_nano  # end >= start (`_time_problem`)
    generate_ms = (end - start) / 1e6
    # A span ending past what this server takes (its clock runs ahead) is no bound of the query: its own are.
    latest = max(end, time.time_ns() + int(MAX_AHEAD.total_seconds() * 1e9))
    if alone and query.ancestors:  # the trace's one query: it lasted as long as the request that holds it
        root = query.ancestors[-1][0]
        outer = (min(start, root.start_time_unix_nano or start), max(end, root.end_time_unix_nano))
        # A request span dated 1990 or 2000, or ending past `latest`, is no bound.
        if outer[0] >= start - _REQUEST_SLACK_NS and outer[1] <= min(end + _REQUEST_SLACK_NS, latest):
            start, end = outer
    # The searches given to the query are its steps: its bounds take them in (a request span in another export, or
    # none, gave no bound), so that its stages add up to at most its latency. A search dated another day, ending
    # past `latest`, or refused (left out of the query) is not.
    retrievals = [
        (r, _genai_documents(listed)) for r, listed in sorted(query.retrievals, key=lambda r: r[0].start_time_unix_nano)
    ]
    for retrieval, r_attrs in retrievals:
        if REFUSED in r_attrs or retrieval.end_time_unix_nano > max(end, latest):  # refused, for its time or else
            continue
        if retrieval.start_time_unix_nano >= start - _REQUEST_SLACK_NS:
            start = min(start, retrieval.start_time_unix_nano)
        if retrieval.end_time_unix_nano <= end + _REQUEST_SLACK_NS:
            end = max(end, retrieval.end_time_unix_nano)
    latency_ms = (end - start) / 1e6
    events: list[dict[str, Any]] = [
        {
            **common,
            "event_type": "query_received",
            "event_id": f"otlp-{span_id}-received",
            "ts": _ts(start),
            "query_text": _question(query) or NOT_CAPTURED,
        }
    ]
    if labelled is not None:
        confidence = _number(labelled, INTENT_CONFIDENCE_ATTRIBUTE)
        events.append(
            {**common, "event_type": "intent_classified", "event_id": f"otlp-{span_id}-intent", "ts": _ts(start),
             "intent": intent, "confidence": 1.0 if confidence is None else confidence}
        )  # fmt: skip
    for n, (retrieval, r_attrs) in enumerate(retrievals):
        sources = _sources(r_attrs)
        # Documents without an id (LangChain's often have none) are no source, but were retrieved all the same.
        documents = _documents(r_attrs)
        event: dict[str, Any] = {
            **common,
            "event_type": "search_completed",
            "event_id": f"otlp-{span_id}-search-{n}",
            "ts": _ts(retrieval.end_time_unix_nano),
            # OpenInference lists what a retriever found, so none listed is none found, as does the newer GenAI
            # `gen_ai.retrieval.documents`; a GenAI retrieval span without it says nothing of its documents: how many
            # it found is not known, which is no "0".
            "result_count": max(len(sources), len(documents), r_attrs.get(_LISTED, 0))
            if sources or documents or _LISTED in r_attrs or _str(r_attrs, "openinference.span.kind") is not None
            else None,
            "duration_ms": (retrieval.end_time_unix_nano - retrieval.start_time_unix_nano) / 1e6,
        }
        if sources:
            event["sources"] = sources
        if REFUSED in r_attrs:
            event[REFUSED] = r_attrs[REFUSED]
        # Read as a source's score is ("0.5" is 0.5); a NaN would be the max or not by the documents' order.
        numbers = (_number({"score": v}, "score") for v in documents.values())
        scores = [v for v in numbers if v is not None and math.isfinite(v)]
        if scores:
            event["top_score"] = max(scores)
        events.append(event)
    output = _messages(attrs.get("gen_ai.output.messages"))  # parsed once: the answer and the finish reason
    response: dict[str, Any] = {
        **common,
        "event_type": "response_generated",
        "event_id": f"otlp-{span_id}-response",
        "ts": _ts(span.end_time_unix_nano),
        "duration_ms": generate_ms,
    }

    def system(a: dict[str, Any]) -> str | None:
        return _str(a, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")

    def model(a: dict[str, Any]) -> str | None:
        return _str(a, "gen_ai.request.model") or _invoked_model(a) or _str(a, "llm.model_name")

    def response_model(a: dict[str, Any]) -> str | None:
        # OpenInference's `llm.model_name` is the model that answered (``gpt-4o-mini-2024-07-18``) when the request
        # named another (``gpt-4o-mini``, in its invocation parameters): the request model groups as OpenAI's does.
        named = _str(a, "llm.model_name")
        return _str(a, "gen_ai.response.model") or (named if named is not None and named != model(a) else None)

    def tokens_in(a: dict[str, Any]) -> int | float | None:
        return _int(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")

    def tokens_out(a: dict[str, Any]) -> int | float | None:
        return _int(a, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion")

    def cached(a: dict[str, Any]) -> int | float | None:
        return _int(a, "gen_ai.usage.cache_read.input_tokens", "llm.token_count.prompt_details.cache_read")

    def cost(a: dict[str, Any]) -> float | None:
        return _number(a, "gen_ai.usage.cost")  # what the provider billed (OpenLIT, Langfuse), in USD

    def billed(a: dict[str, Any]) -> bool:
        return any(read(a) is not None for read in (tokens_in, tokens_out, cost))

    def answer(a: dict[str, Any]) -> str | None:
        return _answer_text(a, _messages(a.get("gen_ai.output.messages")))

    def finish(a: dict[str, Any]) -> str | None:
        return _finish_reason(a, _messages(a.get("gen_ai.output.messages")))

    for key, value in (
        ("gen_ai_system", _from_steps(query, system(attrs), system)),
        ("gen_ai_request_model", _from_steps(query, model(attrs), model)),
        ("gen_ai_response_model", _from_steps(query, response_model(attrs), response_model)),
        ("gen_ai_usage_input_tokens", _from_steps(query, tokens_in(attrs), tokens_in, total=True)),
        ("gen_ai_usage_output_tokens", _from_steps(query, tokens_out(attrs), tokens_out, total=True)),
        ("gen_ai_usage_cache_read_input_tokens", _from_steps(query, cached(attrs), cached, total=True)),
        ("cost_usd", _from_steps(query, cost(attrs), cost, total=True, every=billed)),
        ("ttft_ms", None if (ttft := _number(attrs, "gen_ai.server.time_to_first_token")) is None else ttft * 1000),
        ("finish_reason", _from_steps(query, _finish_reason(attrs, output), finish)),
        ("answer_text", _from_steps(query, _answer_text(attrs, output), answer)),
    ):  # fmt: skip
        if value is not None:
            response[key] = value
    if "answer_text" in response:
        response["answer_chars"] = len(response["answer_text"])
    if isinstance(ttft_ms := response.get("ttft_ms"), int | float) and ttft_ms > generate_ms:
        # Milliseconds sent where the conventions want seconds, most often: a first token the call never saw.
        response[REFUSED] = "ttft_ms longer than the call (gen_ai.server.time_to_first_token is in seconds)"
    failed = _failed(span, attrs)
    # The request around the trace's one query failed after the answer came (its span ERROR): the user got an error.
    request = query.ancestors[-1] if alone and query.ancestors else None
    request_failed = request is not None and _failed(*request[:2])
    if not failed or _billed(response):
        events.append(response)
    if not (failed or request_failed):
        events.append(
            {**common, "event_type": "query_completed", "event_id": f"otlp-{span_id}-completed", "ts": _ts(end),
             "latency_ms": latency_ms, "intent": intent}
        )  # fmt: skip
    else:
        # The failing span: the LLM call's (stage generate), else the request's around it (stage request).
        culprit, culprit_attrs, stage = (
            (span, attrs, "generate")
            if failed or request is None
            else (request[0], _with_events(request[0], request[1]), "request")
        )
        # error.type (the GenAI conventions), else the recorded exception's type (its span event).
        error_type = _str(culprit_attrs, "error.type", "exception.type") or "Error"
        failure: dict[str, Any] = {
            **common,
            "event_type": "query_failed",
            "event_id": f"otlp-{span_id}-failed",
            "ts": _ts(end),
            "error_type": error_type[:200],
            "stage": stage,
            "latency_ms": latency_ms,
            "intent": intent,
        }
        message = _without_traceback(culprit.status.message or _str(culprit_attrs, "exception.message") or "")
        if message:
            failure["error_message"] = message[:2000]
        events.append(failure)
    return events
