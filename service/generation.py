"""The LLM answer step: a deterministic local generator and an OpenAI-compatible HTTP client, one Protocol."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Protocol

import httpx
import msgspec
import structlog

from querylog.logging.events import name_text_problem
from querylog.service.retrieval import Hit, tokenize

__all__ = [
    "FAILURE_MARKER",
    "Generation",
    "GenerationConnectionError",
    "GenerationError",
    "GenerationHTTPError",
    "GenerationResponseError",
    "GenerationTimeout",
    "Generator",
    "LocalGenerator",
    "OpenAICompatibleGenerator",
    "SimulatedFailure",
    "estimate_tokens",
    "generator_from_env",
    "grounding_score",
]

#: A query containing this marker (any case) makes `LocalGenerator` raise `SimulatedFailure`, so that demo
#: workloads can produce failed queries on purpose and deterministically.
FAILURE_MARKER: Final = "#fail"

ENV_BASE_URL: Final = "QUERYLOG_LLM_BASE_URL"
ENV_API_KEY: Final = "QUERYLOG_LLM_API_KEY"
ENV_MODEL: Final = "QUERYLOG_LLM_MODEL"
ENV_TIMEOUT_S: Final = "QUERYLOG_LLM_TIMEOUT_S"


@dataclass(frozen=True, slots=True, kw_only=True)
class Generation:
    """One answer. `system` and `model` follow OpenTelemetry's gen_ai.system and gen_ai.request.model.

    `quality_score` is a heuristic in [0, 1] (see `grounding_score`), None when a generator cannot judge.
    """

    answer: str
    system: str
    model: str
    input_tokens: int
    output_tokens: int
    quality_score: float | None
    #: Why generation stopped (OpenAI's ``finish_reason``: stop, length, content_filter, …), when reported.
    finish_reason: str | None = None
    #: The model that answered, when the provider names a snapshot (``gpt-4o-2024-08-06``).
    response_model: str | None = None
    #: Input tokens served from the provider's prompt cache, and output tokens spent on reasoning, if reported.
    cache_read_tokens: int | None = None
    reasoning_tokens: int | None = None


class Generator(Protocol):
    """Anything that turns a query, its intent and the retrieved hits into an answer."""

    def generate(self, query: str, intent: str, hits: Sequence[Hit]) -> Generation: ...


class GenerationError(Exception):
    """The answer step failed. Subclass names end up as the failed query's `error_type`."""


class SimulatedFailure(GenerationError):  # noqa: N818 - the name is the error_type users see
    """Raised on purpose: the query carried `FAILURE_MARKER`."""


class GenerationTimeout(GenerationError):  # noqa: N818 - matches httpx's TimeoutException naming
    """The LLM server did not answer within the timeout."""


class GenerationConnectionError(GenerationError):
    """The LLM server could not be reached (refused, DNS, TLS, dropped connection)."""


class GenerationHTTPError(GenerationError):
    """The LLM server answered with an HTTP error status; `status` holds it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class GenerationResponseError(GenerationError):
    """The LLM server answered 2xx with a body that is not a usable chat completion."""


_HANGUL: Final = re.compile(r"[\uac00-\ud7a3]")
_LATIN_OR_DIGIT_RUN: Final = re.compile(r"[A-Za-z0-9]+")
_SYMBOL: Final = re.compile(r"[^\sA-Za-z0-9\uac00-\ud7a3]")


def estimate_tokens(text: str) -> int:
    """A deterministic token estimate for when no tokenizer is at hand.

    Each Hangul syllable counts 1 (BPE vocabularies of current LLMs spend about one token per syllable);
    each run of Latin letters or digits counts 4/3 (English averages about 0.75 words a token), rounded up
    over the whole text; every other non-space character (punctuation, symbols) counts 1.
    """
    hangul = len(_HANGUL.findall(text))
    words = len(_LATIN_OR_DIGIT_RUN.findall(text))
    symbols = len(_SYMBOL.findall(text))
    return hangul + math.ceil(words * 4 / 3) + symbols


def grounding_score(query: str, hits: Sequence[Hit]) -> float:
    """How well the retrieved context covers the query, in [0, 1]: 0.0 when nothing was retrieved.

    Half is the best BM25 score squashed by s / (s + 5) (5 is a middling score on the bundled corpus, so a
    strong match lands near 0.75), half is the share of the query's terms found in the hits' titles and
    snippets. It judges the evidence an answer could rest on, not the answer itself.
    """
    if not hits:
        return 0.0
    top = max(0.0, hits[0].score)
    strength = top / (top + 5.0)
    query_terms = set(tokenize(query))
    if query_terms:
        covered: set[str] = set()
        for hit in hits:
            covered.update(tokenize(hit.title))
            covered.update(tokenize(hit.snippet))
        coverage = len(query_terms & covered) / len(query_terms)
    else:
        coverage = 0.0
    return round(0.5 * strength + 0.5 * coverage, 3)


def language_of(text: str) -> str:
    """The language a question is answered in (and recorded with): ``ko`` when it holds Hangul, else ``en``."""
    return "ko" if _HANGUL.search(text) is not None else "en"


_SYSTEM_PROMPT: Final = {
    "ko": (
        "당신은 주식과 뉴스 질문에 답하는 금융 정보 도우미입니다. 제공된 자료만 근거로 한국어로 간결하게 답하고, "
        "근거로 쓴 자료를 [번호]로 인용하세요. 자료에 없는 내용은 모른다고 말하세요. 투자 권유는 하지 마세요."
    ),
    "en": (
        "You are a financial information assistant answering questions about stocks and news. Answer concisely "
        "in English using only the provided documents, cite them as [n], say so when they do not cover the "
        "question, and do not give investment advice."
    ),
}


def _build_messages(query: str, intent: str, hits: Sequence[Hit]) -> list[dict[str, str]]:
    lang = language_of(query)
    context = "\n".join(f"[{n}] {hit.title}: {hit.snippet}" for n, hit in enumerate(hits, start=1))
    user = f"intent: {intent}\ndocuments:\n{context or '(none)'}\n\nquestion: {query}"
    return [{"role": "system", "content": _SYSTEM_PROMPT[lang]}, {"role": "user", "content": user}]


_LEAD: Final[dict[str, dict[str, str]]] = {
    "ko": {
        "stock_analysis": "주가와 실적 관점에서 관련 자료를 정리했습니다.",
        "news_inquiry": "관련 최신 소식을 정리했습니다.",
        "market_overview": "시장 동향을 정리했습니다.",
        "company_info": "기업 정보를 정리했습니다.",
        "unknown": "질문의 의도를 정확히 파악하지 못해, 가장 관련 있어 보이는 자료를 정리했습니다.",
    },
    "en": {
        "stock_analysis": "Here is what the documents say about the stock and its results.",
        "news_inquiry": "Here are the latest related news items.",
        "market_overview": "Here is an overview of the market.",
        "company_info": "Here is the company information found.",
        "unknown": "I could not tell exactly what you are asking; these documents look most relevant.",
    },
}
_NO_HITS: Final = {
    "ko": "관련 자료를 찾지 못했습니다. 종목명이나 키워드를 바꿔 다시 질문해 주세요.",
    "en": "I found no related documents. Try naming the company, ticker or topic.",
}
_KEY_POINT: Final = {"ko": "핵심 내용: ", "en": "Key point: "}
_SOURCES: Final = {"ko": "참고 자료: ", "en": "Sources: "}
_DISCLAIMER: Final = {
    "ko": "(데모용 합성 데이터에 기반한 답변이며 투자 권유가 아닙니다.)",
    "en": "(Based on synthetic demo data; not investment advice.)",
}


class LocalGenerator:
    """Templated answers without any model: deterministic, offline, in the query's language.

    The answer leads with a sentence for the intent, quotes the best hit's snippet and cites every hit's
    title. Token counts are `estimate_tokens` of the prompt an HTTP generator would send and of the answer.
    A query containing `FAILURE_MARKER` raises `SimulatedFailure`.
    """

    system: Final = "local"

    def __init__(self, model: str = "querylog-template-v1") -> None:
        if not model.strip():
            raise ValueError("model must be a non-empty name, e.g. 'querylog-template-v1'")
        self.model = model

    def generate(self, query: str, intent: str, hits: Sequence[Hit]) -> Generation:
        if FAILURE_MARKER in query.casefold():
            raise SimulatedFailure(f"simulated failure: the query contains the {FAILURE_MARKER} marker")
        lang = language_of(query)
        if hits:
            sources = "; ".join(f"[{n}] {hit.title}" for n, hit in enumerate(hits, start=1))
            lead = _LEAD[lang].get(intent, _LEAD[lang]["unknown"])
            answer = " ".join((lead, _KEY_POINT[lang] + hits[0].snippet, _SOURCES[lang] + sources, _DISCLAIMER[lang]))
        else:
            answer = _NO_HITS[lang]
        prompt = "\n".join(message["content"] for message in _build_messages(query, intent, hits))
        return Generation(
            answer=answer,
            system=self.system,
            model=self.model,
            input_tokens=estimate_tokens(prompt),
            output_tokens=estimate_tokens(answer),
            quality_score=grounding_score(query, hits),
            finish_reason="stop",
        )


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None


class _ChatCompletion(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage | None = None
    model: str | None = None


_COMPLETION_DECODER: Final = msgspec.json.Decoder(_ChatCompletion)
_ERROR_BODY_CHARS: Final = 200


def _check_base_url(value: str, name: str) -> str:
    url = value.strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{name} must be an http(s) URL such as https://api.openai.com/v1, got {value!r}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{name} must be an http(s) URL such as https://api.openai.com/v1, got {value!r}")
    return url


def _check_timeout(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


class OpenAICompatibleGenerator:
    """Answers through any server speaking the OpenAI chat completions API (OpenAI, vLLM, Ollama, LiteLLM…).

    POSTs ``{base_url}/chat/completions``; an empty `api_key` sends no Authorization header (local servers
    need none). Failures surface as `GenerationError` subclasses, each chained to the httpx or msgspec error.
    A `client` passed in is used as is and left open; one created here is closed by `close()`. When the server
    omits `usage`, token counts fall back to `estimate_tokens`.
    """

    system: Final = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        timeout_s: float = 30,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = _check_base_url(base_url, "base_url")
        if not isinstance(api_key, str):
            raise ValueError("api_key must be a string; pass '' for servers that need no key")
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model must name the model to request, e.g. 'gpt-4o-mini'")
        self.model = model.strip()
        self.timeout_s = _check_timeout(timeout_s, "timeout_s")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client()

    def close(self) -> None:
        """Close the HTTP client if this generator created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> OpenAICompatibleGenerator:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def generate(self, query: str, intent: str, hits: Sequence[Hit]) -> Generation:
        messages = _build_messages(query, intent, hits)
        body = msgspec.json.encode({"model": self.model, "messages": messages})
        url = f"{self.base_url}/chat/completions"
        try:
            response = self._client.post(url, content=body, headers=self._headers, timeout=self.timeout_s)
        except httpx.TimeoutException as exc:
            raise GenerationTimeout(f"no answer from {url} within {self.timeout_s:g} s") from exc
        except httpx.DecodingError as exc:
            raise GenerationResponseError(f"undecodable response body from {url}: {exc}") from exc
        except httpx.RequestError as exc:
            raise GenerationConnectionError(f"request to {url} failed: {type(exc).__name__}: {exc}") from exc
        if response.is_error:
            excerpt = response.text[:_ERROR_BODY_CHARS]
            raise GenerationHTTPError(response.status_code, f"{url} answered HTTP {response.status_code}: {excerpt}")
        try:
            completion = _COMPLETION_DECODER.decode(response.content)
        except msgspec.DecodeError as exc:
            raise GenerationResponseError(f"{url} returned no valid chat completion: {exc}") from exc
        if not completion.choices:
            raise GenerationResponseError(f"{url} returned a chat completion with no choices")
        answer = completion.choices[0].message.content
        if not answer or not answer.strip():
            raise GenerationResponseError(f"{url} returned an empty answer in choices[0].message.content")
        usage = completion.usage
        if usage is not None:
            input_tokens, output_tokens = usage.prompt_tokens, usage.completion_tokens
        else:
            input_tokens = estimate_tokens("\n".join(m["content"] for m in messages))
            output_tokens = estimate_tokens(answer)
        return Generation(
            answer=answer,
            system=self.system,
            model=self.model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            quality_score=grounding_score(query, hits),
            finish_reason=_backend_name("finish_reason", completion.choices[0].finish_reason),
            response_model=_backend_name("model", completion.model),
            cache_read_tokens=usage.prompt_tokens_details.cached_tokens
            if usage is not None and usage.prompt_tokens_details is not None
            else None,
            reasoning_tokens=usage.completion_tokens_details.reasoning_tokens
            if usage is not None and usage.completion_tokens_details is not None
            else None,
        )


_log = structlog.get_logger("querylog.generation")
#: The backend's fields whose odd value was said once already.
_SAID: set[str] = set()


def _backend_name(field: str, value: str | None) -> str | None:
    """A name the backend answered (its model, a finish reason), or None when it is none a query's events can
    hold (blank, over 200 characters, a control character): the answer still reaches the user, without it. Said
    once per field, in the log."""
    if value is None or name_text_problem(value) is None:
        return value
    if field not in _SAID:
        _SAID.add(field)
        _log.warning("backend_name_left_out", field=field, value=value[:80], why=name_text_problem(value))
    return None


def generator_from_env(environ: Mapping[str, str]) -> Generator:
    """The generator the environment asks for.

    `QUERYLOG_LLM_BASE_URL` selects `OpenAICompatibleGenerator`, with `QUERYLOG_LLM_MODEL` (required),
    `QUERYLOG_LLM_API_KEY` (optional) and `QUERYLOG_LLM_TIMEOUT_S` (optional, default 30). Without it the
    answer is `LocalGenerator`'s. A bad value raises ValueError naming the variable; so does setting the
    other variables without the base URL, which would otherwise be silently ignored.
    """
    base_url = environ.get(ENV_BASE_URL, "").strip()
    if not base_url:
        stray = [name for name in (ENV_API_KEY, ENV_MODEL, ENV_TIMEOUT_S) if environ.get(name, "").strip()]
        if stray:
            raise ValueError(
                f"{', '.join(stray)} set but {ENV_BASE_URL} is not: set {ENV_BASE_URL} "
                f"(e.g. https://api.openai.com/v1) to use an LLM server, or unset {', '.join(stray)}"
            )
        return LocalGenerator()
    url = _check_base_url(base_url, ENV_BASE_URL)
    model = environ.get(ENV_MODEL, "").strip()
    if not model:
        raise ValueError(f"{ENV_MODEL} must name the model to request (e.g. gpt-4o-mini) when {ENV_BASE_URL} is set")
    if (why := name_text_problem(model)) is not None:  # every answer's event carries it: refused now, not on each
        raise ValueError(f"{ENV_MODEL}: {why}")
    raw_timeout = environ.get(ENV_TIMEOUT_S, "").strip()
    timeout_s = 30.0
    if raw_timeout:
        try:
            timeout_s = float(raw_timeout)
        except ValueError as exc:
            raise ValueError(f"{ENV_TIMEOUT_S} must be a number of seconds > 0, got {raw_timeout!r}") from exc
        _check_timeout(timeout_s, ENV_TIMEOUT_S)
    return OpenAICompatibleGenerator(url, environ.get(ENV_API_KEY, "").strip(), model, timeout_s)
