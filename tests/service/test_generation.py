"""Tests for the answer step: LocalGenerator, the OpenAI-compatible client and generator_from_env."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from querylog.service.generation import (
    FAILURE_MARKER,
    Generation,
    GenerationConnectionError,
    GenerationError,
    GenerationHTTPError,
    GenerationResponseError,
    GenerationTimeout,
    Generator,
    LocalGenerator,
    OpenAICompatibleGenerator,
    SimulatedFailure,
    estimate_tokens,
    generator_from_env,
    grounding_score,
)
from querylog.service.retrieval import Hit, Retriever

BASE_URL = "https://llm.example.test/v1"


@pytest.fixture(scope="module")
def retriever() -> Retriever:
    return Retriever.from_bundled(cache_size=0)


def _hits(retriever: Retriever, query: str) -> tuple[Hit, ...]:
    return retriever.search(query).docs


# --- LocalGenerator ---------------------------------------------------------------------------------------


def test_local_answer_is_deterministic(retriever: Retriever) -> None:
    hits = _hits(retriever, "네이버의 주가 전망은?")
    first = LocalGenerator().generate("네이버의 주가 전망은?", "stock_analysis", hits)
    assert first == LocalGenerator().generate("네이버의 주가 전망은?", "stock_analysis", hits)


def test_local_answers_korean_query_in_korean_citing_titles(retriever: Retriever) -> None:
    hits = _hits(retriever, "네이버의 주가 전망은?")
    generation = LocalGenerator().generate("네이버의 주가 전망은?", "stock_analysis", hits)
    assert generation.answer.startswith("주가와 실적 관점에서")
    assert "참고 자료: [1] " + hits[0].title in generation.answer
    assert all(hit.title in generation.answer for hit in hits)
    assert (generation.system, generation.model) == ("local", "querylog-template-v1")


def test_local_answers_english_query_in_english(retriever: Retriever) -> None:
    hits = _hits(retriever, "Tesla deliveries news")
    generation = LocalGenerator().generate("Tesla deliveries news", "news_inquiry", hits)
    assert generation.answer.startswith("Here are the latest related news items.")
    assert "Sources: [1] " + hits[0].title in generation.answer
    assert not any("\uac00" <= ch <= "\ud7a3" for ch in generation.answer)


def test_local_without_hits_says_nothing_was_found() -> None:
    generation = LocalGenerator().generate("삼성전자 주가", "stock_analysis", ())
    assert generation.answer.startswith("관련 자료를 찾지 못했습니다")
    assert generation.quality_score == 0.0


def test_local_token_counts_are_the_documented_estimates(retriever: Retriever) -> None:
    hits = _hits(retriever, "코스피 지수")
    generation = LocalGenerator().generate("코스피 지수", "market_overview", hits)
    assert generation.output_tokens == estimate_tokens(generation.answer)
    assert generation.input_tokens > estimate_tokens("코스피 지수")  # the prompt carries the retrieved context


def test_local_unknown_intent_string_falls_back_to_the_unknown_lead(retriever: Retriever) -> None:
    hits = _hits(retriever, "코스피")
    generation = LocalGenerator().generate("코스피", "weather", hits)
    assert generation.answer.startswith("질문의 의도를 정확히 파악하지 못해")


@pytest.mark.parametrize("query", [f"삼성전자 주가 {FAILURE_MARKER}", "Tesla news #FAIL please"])
def test_failure_marker_raises_simulated_failure(query: str) -> None:
    with pytest.raises(SimulatedFailure, match="simulated failure") as info:
        LocalGenerator().generate(query, "stock_analysis", ())
    assert isinstance(info.value, GenerationError)
    assert type(info.value).__name__ == "SimulatedFailure"  # what the tracker records as error_type


def test_local_generator_satisfies_the_protocol() -> None:
    generator: Generator = LocalGenerator()
    assert isinstance(generator.generate("hi", "unknown", ()), Generation)


# --- estimates and quality --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("삼성전자", 4),  # one token a Hangul syllable
        ("one two three", 4),  # 3 words * 4/3
        ("주가?", 3),  # 2 syllables + 1 symbol
        ("NVIDIA 주가 2030", 5),  # ceil(2 * 4/3) = 3, plus 2 syllables
    ],
)
def test_estimate_tokens(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_grounding_score_is_higher_for_a_well_covered_query(retriever: Retriever) -> None:
    good = grounding_score("네이버 목표주가", _hits(retriever, "네이버 목표주가"))
    weak = grounding_score("네이버 날씨 우산", _hits(retriever, "네이버 날씨 우산"))
    assert 0.0 <= weak < good <= 1.0
    assert grounding_score("anything", ()) == 0.0


# --- OpenAICompatibleGenerator ----------------------------------------------------------------------------


def _completion(content: str | None = "네이버 목표주가는 27만 원입니다 [1].", **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-test-2030-01-01",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 123, "completion_tokens": 45, "total_tokens": 168},
    }
    body.update(extra)
    return body


@pytest.fixture
def requests() -> list[httpx.Request]:
    return []


def _generator(
    handler: Callable[[httpx.Request], httpx.Response], *, api_key: str = "sk-test"
) -> OpenAICompatibleGenerator:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return OpenAICompatibleGenerator(BASE_URL + "/", api_key, "gpt-test", timeout_s=5, client=client)


def test_cached_and_reasoning_token_counts_are_read_when_the_provider_reports_them(retriever: Retriever) -> None:
    usage = {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 256},
    }
    generator = _generator(lambda request: httpx.Response(200, json=_completion(usage=usage, model=None)))
    generation = generator.generate("네이버 목표주가", "stock_analysis", _hits(retriever, "네이버 목표주가"))
    assert (generation.cache_read_tokens, generation.reasoning_tokens) == (1024, 256)
    assert (generation.input_tokens, generation.output_tokens) == (1200, 300)
    assert generation.response_model is None


@pytest.mark.parametrize("odd", ["", "   ", "stop\n", "m" * 300])
def test_a_name_the_backend_answered_that_no_event_holds_is_left_out_and_the_answer_kept(
    retriever: Retriever, odd: str
) -> None:
    """A backend answering ``"finish_reason": ""`` (or a model of 300 characters) made every chat request a 500:
    the tracker refuses such a name. The answer reaches the user; the name is left out, said once in the log."""
    body = _completion(model=odd)
    body["choices"][0]["finish_reason"] = odd  # type: ignore[index]
    generator = _generator(lambda request: httpx.Response(200, json=body))
    generation = generator.generate("네이버 목표주가", "stock_analysis", _hits(retriever, "네이버 목표주가"))
    assert generation.answer and (generation.finish_reason, generation.response_model) == (None, None)


def test_http_200_is_parsed_into_a_generation(retriever: Retriever, requests: list[httpx.Request]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=_completion())

    hits = _hits(retriever, "네이버 목표주가")
    generation = _generator(handler).generate("네이버 목표주가", "stock_analysis", hits)
    assert generation == Generation(
        answer="네이버 목표주가는 27만 원입니다 [1].",
        system="openai",
        model="gpt-test",
        input_tokens=123,
        output_tokens=45,
        quality_score=grounding_score("네이버 목표주가", hits),
        finish_reason="stop",
        response_model="gpt-test-2030-01-01",
    )
    (request,) = requests
    assert request.method == "POST"
    assert str(request.url) == BASE_URL + "/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-test"
    sent = json.loads(request.content)
    assert sent["model"] == "gpt-test"
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert "네이버 목표주가" in sent["messages"][1]["content"]
    assert hits[0].title in sent["messages"][1]["content"]


def test_empty_api_key_sends_no_authorization(requests: list[httpx.Request]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=_completion())

    _generator(handler, api_key="").generate("hi", "unknown", ())
    assert "Authorization" not in requests[0].headers


def test_missing_usage_falls_back_to_estimates() -> None:
    body = _completion("An answer.")
    del body["usage"]
    generation = _generator(lambda request: httpx.Response(200, json=body)).generate("q", "unknown", ())
    assert generation.output_tokens == estimate_tokens("An answer.")
    assert generation.input_tokens > 0


def test_timeout_becomes_generation_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    with pytest.raises(GenerationTimeout, match="within 5 s") as info:
        _generator(handler).generate("q", "unknown", ())
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_unreachable_server_becomes_generation_connection_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(GenerationConnectionError, match="ConnectError") as info:
        _generator(handler).generate("q", "unknown", ())
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_http_error_status_becomes_generation_http_error(status: int) -> None:
    handler = lambda request: httpx.Response(status, text="upstream exploded")  # noqa: E731
    with pytest.raises(GenerationHTTPError, match=f"HTTP {status}: upstream exploded") as info:
        _generator(handler).generate("q", "unknown", ())
    assert info.value.status == status


@pytest.mark.parametrize(
    "body",
    [
        b"not json at all",
        b"{}",
        json.dumps({"choices": []}).encode(),
        json.dumps({"choices": [{"message": {"content": 42}}]}).encode(),
        json.dumps(_completion(content=None)).encode(),
        json.dumps(_completion(content="  ")).encode(),
        json.dumps(_completion(usage={"prompt_tokens": "many"})).encode(),
    ],
    ids=["not-json", "no-choices-key", "empty-choices", "content-not-str", "content-null", "blank", "bad-usage"],
)
def test_malformed_body_becomes_generation_response_error(body: bytes) -> None:
    handler = lambda request: httpx.Response(200, content=body)  # noqa: E731
    with pytest.raises(GenerationResponseError):
        _generator(handler).generate("q", "unknown", ())


def test_response_errors_chain_the_decoder_error() -> None:
    handler = lambda request: httpx.Response(200, content=b"{")  # noqa: E731
    with pytest.raises(GenerationResponseError) as info:
        _generator(handler).generate("q", "unknown", ())
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "ftp://example.test"}, "base_url must be an http"),
        ({"base_url": "not a url"}, "base_url must be an http"),
        ({"model": " "}, "model must name the model"),
        ({"timeout_s": 0}, "timeout_s must be a finite number"),
        ({"timeout_s": float("inf")}, "timeout_s must be a finite number"),
    ],
)
def test_constructor_validates_arguments(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"base_url": BASE_URL, "api_key": "k", "model": "m", **kwargs}
    with pytest.raises(ValueError, match=message):
        OpenAICompatibleGenerator(**arguments)  # type: ignore[arg-type]


def test_owned_client_is_closed_but_a_passed_client_is_left_open() -> None:
    passed = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    with OpenAICompatibleGenerator(BASE_URL, "k", "m", client=passed):
        pass
    assert not passed.is_closed
    owned = OpenAICompatibleGenerator(BASE_URL, "k", "m")
    owned.close()
    assert owned._client.is_closed


# --- generator_from_env -----------------------------------------------------------------------------------


@pytest.fixture
def closing() -> Iterator[list[OpenAICompatibleGenerator]]:
    made: list[OpenAICompatibleGenerator] = []
    yield made
    for generator in made:
        generator.close()


def test_env_without_base_url_gives_local_generator() -> None:
    assert isinstance(generator_from_env({}), LocalGenerator)
    assert isinstance(generator_from_env({"QUERYLOG_LLM_BASE_URL": "  "}), LocalGenerator)


def test_env_with_base_url_gives_http_generator(closing: list[OpenAICompatibleGenerator]) -> None:
    generator = generator_from_env(
        {
            "QUERYLOG_LLM_BASE_URL": "http://localhost:11434/v1/",
            "QUERYLOG_LLM_API_KEY": "sk-env",
            "QUERYLOG_LLM_MODEL": "llama-test",
            "QUERYLOG_LLM_TIMEOUT_S": "2.5",
        }
    )
    assert isinstance(generator, OpenAICompatibleGenerator)
    closing.append(generator)
    assert (generator.base_url, generator.model, generator.timeout_s) == (
        "http://localhost:11434/v1",
        "llama-test",
        2.5,
    )


@pytest.mark.parametrize("model", ["m" * 201, "gpt\t4o"])
def test_a_model_setting_no_event_can_hold_is_refused_at_start(model: str) -> None:
    """It was taken, and every chat request then failed where the tracker refused it as the answer's model."""
    with pytest.raises(ValueError, match="QUERYLOG_LLM_MODEL: a name is at most 200 characters"):
        generator_from_env({"QUERYLOG_LLM_BASE_URL": BASE_URL, "QUERYLOG_LLM_MODEL": model})


def test_env_timeout_defaults_to_30_seconds(closing: list[OpenAICompatibleGenerator]) -> None:
    generator = generator_from_env({"QUERYLOG_LLM_BASE_URL": BASE_URL, "QUERYLOG_LLM_MODEL": "m"})
    assert isinstance(generator, OpenAICompatibleGenerator)
    closing.append(generator)
    assert generator.timeout_s == 30.0


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"QUERYLOG_LLM_BASE_URL": "localhost:8000", "QUERYLOG_LLM_MODEL": "m"}, "QUERYLOG_LLM_BASE_URL"),
        ({"QUERYLOG_LLM_BASE_URL": BASE_URL}, "QUERYLOG_LLM_MODEL"),
        (
            {"QUERYLOG_LLM_BASE_URL": BASE_URL, "QUERYLOG_LLM_MODEL": "m", "QUERYLOG_LLM_TIMEOUT_S": "soon"},
            "QUERYLOG_LLM_TIMEOUT_S",
        ),
        (
            {"QUERYLOG_LLM_BASE_URL": BASE_URL, "QUERYLOG_LLM_MODEL": "m", "QUERYLOG_LLM_TIMEOUT_S": "-1"},
            "QUERYLOG_LLM_TIMEOUT_S",
        ),
        (
            {"QUERYLOG_LLM_BASE_URL": BASE_URL, "QUERYLOG_LLM_MODEL": "m", "QUERYLOG_LLM_TIMEOUT_S": "nan"},
            "QUERYLOG_LLM_TIMEOUT_S",
        ),
        ({"QUERYLOG_LLM_MODEL": "m"}, "QUERYLOG_LLM_MODEL set but QUERYLOG_LLM_BASE_URL is not"),
    ],
)
def test_env_bad_values_name_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ValueError, match=variable):
        generator_from_env(environ)
