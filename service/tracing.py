"""Langfuse tracing of the chat pipeline: one trace per query, the answer step as a generation observation."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any, Final

import structlog
from langfuse import Langfuse, LangfuseGeneration, LangfuseSpan, propagate_attributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "ENV_HOST",
    "ENV_PUBLIC_KEY",
    "ENV_SECRET_KEY",
    "GenerationTrace",
    "LangfuseTracing",
    "QueryTrace",
    "langfuse_settings",
    "trace_url",
]

ENV_PUBLIC_KEY: Final = "LANGFUSE_PUBLIC_KEY"
ENV_SECRET_KEY: Final = "LANGFUSE_SECRET_KEY"  # noqa: S105 - the variable's name, not a secret
ENV_HOST: Final = "LANGFUSE_HOST"
#: The name newer Langfuse SDKs read for the host; accepted when LANGFUSE_HOST is unset.
ENV_BASE_URL: Final = "LANGFUSE_BASE_URL"

_log = structlog.get_logger("querylog.tracing")
_TRACE_ID: Final = re.compile(r"[0-9a-f]{32}")
# Langfuse's environment names: lowercase, digits, '-' and '_', at most 40, never starting with "langfuse".
_LANGFUSE_ENV: Final = re.compile(r"(?!langfuse)[a-z0-9_-]{1,40}")
_MAX_STATUS_CHARS: Final = 500


def trace_url(host: str, trace_id: str) -> str:
    """The Langfuse page of a trace: ``{host}/trace/{trace_id}`` (Langfuse redirects it to the project's view)."""
    if not _TRACE_ID.fullmatch(trace_id):
        raise ValueError(f"trace_id must be 32 lowercase hex characters (an OpenTelemetry trace id), got {trace_id!r}")
    return f"{host.rstrip('/')}/trace/{trace_id}"


def _redact_tree(redact: Callable[[str], str], data: Any) -> Any:
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, Mapping):
        return {key: _redact_tree(redact, value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_redact_tree(redact, value) for value in data]
    return data


class GenerationTrace:
    """The answer step's observation. Every call is best effort: tracing never fails a query."""

    __slots__ = ("_observation", "_outputs")

    def __init__(self, observation: LangfuseGeneration | None, *, outputs: bool = True) -> None:
        self._observation = observation
        self._outputs = outputs

    def record(
        self,
        *,
        model: str,
        output: str,
        input_tokens: int | None,
        output_tokens: int | None,
        system: str | None = None,
    ) -> None:
        """What the model answered (left out when outputs are not kept: ``QUERYLOG_CAPTURE_ANSWERS=0``) and what it
        cost, in Langfuse's usage names (``input``/``output``)."""
        if self._observation is None:
            return
        usage = {name: n for name, n in (("input", input_tokens), ("output", output_tokens)) if n is not None}
        try:
            self._observation.update(
                model=model,
                output=output if self._outputs else None,
                usage_details=usage or None,
                metadata={"gen_ai.system": system},
            )
        except Exception as exc:  # the SDK is a guest on the request path
            _trace_failed("record_generation", exc)


class QueryTrace:
    """One query's trace: its id, and the generation observation the answer step opens inside it."""

    __slots__ = ("_outputs", "_redact", "_root", "trace_id")

    def __init__(
        self, trace_id: str | None, root: LangfuseSpan | None, redact: Callable[[str], str], *, outputs: bool = True
    ) -> None:
        self.trace_id = trace_id
        self._root = root
        self._redact = redact
        self._outputs = outputs

    @contextmanager
    def generation(self, *, name: str = "generate", input: Any = None) -> Iterator[GenerationTrace]:
        """Time the answer step as a Langfuse generation; an exception inside marks it ERROR and propagates."""
        observation: LangfuseGeneration | None = None
        if self._root is not None:
            try:
                observation = self._root.start_observation(name=name, as_type="generation", input=input)
            except Exception as exc:
                _trace_failed("start_generation", exc)
        try:
            yield GenerationTrace(observation, outputs=self._outputs)
        except BaseException as exc:
            _end(observation, exc, self._redact)
            raise
        _end(observation, None, self._redact)

    def finish(self, output: Any) -> None:
        """Record the query's final output on the trace's root observation (not when outputs are not kept)."""
        if self._root is None or not self._outputs:
            return
        try:
            self._root.update(output=output)
        except Exception as exc:
            _trace_failed("record_output", exc)


def _end(
    observation: LangfuseSpan | LangfuseGeneration | None, exc: BaseException | None, redact: Callable[[str], str]
) -> None:
    if observation is None:
        return
    try:
        if exc is not None:
            message = redact(f"{type(exc).__name__}: {exc}")[:_MAX_STATUS_CHARS]
            observation.update(level="ERROR", status_message=message)
        observation.end()
    except Exception as sdk_exc:
        _trace_failed("end_observation", sdk_exc)


def _trace_failed(step: str, exc: Exception) -> None:
    _log.warning("langfuse_trace_failed", step=step, error_type=type(exc).__name__, error=str(exc)[:200])


#: A trace that records nothing, for pipelines run without tracing.
NULL_TRACE: Final = QueryTrace(None, None, lambda text: text)


def langfuse_settings(environ: Mapping[str, str]) -> dict[str, str] | None:
    """`LANGFUSE_PUBLIC_KEY`, `LANGFUSE_SECRET_KEY` and `LANGFUSE_HOST` (or `LANGFUSE_BASE_URL`) when all are set;
    None when none is. Setting only some raises ValueError naming the missing ones, rather than silently not
    tracing (`querylog config` says so as `serve` would)."""
    values = {
        ENV_PUBLIC_KEY: environ.get(ENV_PUBLIC_KEY, "").strip(),
        ENV_SECRET_KEY: environ.get(ENV_SECRET_KEY, "").strip(),
        ENV_HOST: (environ.get(ENV_HOST, "") or environ.get(ENV_BASE_URL, "")).strip(),
    }
    missing = [name for name, value in values.items() if not value]
    if len(missing) == len(values):
        return None
    if missing:
        raise ValueError(
            f"Langfuse tracing needs {', '.join(values)}; {', '.join(missing)} not set. "
            "Set them all to trace queries, or unset the others."
        )
    _check_host(values[ENV_HOST])  # as LangfuseTracing will: `querylog config` refuses what `serve` would
    return values


def _check_host(host: str) -> None:
    if not re.match(r"^https?://[^\s/]+", host):
        raise ValueError(f"{ENV_HOST} must be an http(s) URL like https://cloud.langfuse.com; got {host!r}")


class LangfuseTracing:
    """Traces queries to Langfuse through the SDK's own OpenTelemetry pipeline.

    Spans go through a `TracerProvider` of our own — never the process's global one, so an application's other
    OpenTelemetry setup is left alone — whose Langfuse span processor batches and exports them on a background
    thread. The request thread only creates spans in memory: a Langfuse outage costs the chat request nothing;
    spans that cannot be exported are dropped by the processor once its queue is full.

    `span_exporter` replaces the OTLP exporter (tests pass an ``InMemorySpanExporter``). `redact` is applied to
    every string in an observation's input, output and metadata, and to error messages, before the SDK keeps them.
    `capture_outputs=False` (``QUERYLOG_CAPTURE_ANSWERS=0``: no answer kept anywhere) leaves the answers out of the
    generations and the traces; their inputs, models, token counts and timings are still sent.
    """

    def __init__(
        self,
        *,
        public_key: str,
        secret_key: str,
        host: str,
        environment: str | None = None,
        release: str | None = None,
        service: str = "querylog",
        redact: Callable[[str], str] | None = None,
        span_exporter: SpanExporter | None = None,
        export_timeout_s: int = 5,
        capture_outputs: bool = True,
    ) -> None:
        if not public_key.strip() or not secret_key.strip():
            raise ValueError(f"Langfuse needs both keys: set {ENV_PUBLIC_KEY} and {ENV_SECRET_KEY} (pk-lf-…, sk-lf-…)")
        _check_host(host)
        if export_timeout_s < 1:
            raise ValueError(f"export_timeout_s must be >= 1 second, got {export_timeout_s}")
        self.host = host.rstrip("/")
        self.public_key = public_key
        self._redact = redact or (lambda text: text)
        self.capture_outputs = capture_outputs
        self._provider = TracerProvider(resource=Resource.create({"service.name": service}))
        lf_env = environment.lower() if environment else None
        self._client = Langfuse(
            public_key=public_key,
            secret_key=secret_key,
            base_url=self.host,
            environment=lf_env if lf_env and _LANGFUSE_ENV.fullmatch(lf_env) else None,
            release=release,
            tracer_provider=self._provider,
            span_exporter=span_exporter,
            timeout=export_timeout_s,
            mask=self._mask,
        )
        self._closed = False

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        environment: str | None = None,
        release: str | None = None,
        service: str = "querylog",
        redact: Callable[[str], str] | None = None,
        capture_outputs: bool = True,
    ) -> LangfuseTracing | None:
        """Tracing when `LANGFUSE_PUBLIC_KEY`, `LANGFUSE_SECRET_KEY` and `LANGFUSE_HOST` are all set; None when
        none is. Setting only some raises ValueError naming the missing ones (`langfuse_settings`)."""
        values = langfuse_settings(environ)
        if values is None:
            return None
        return cls(
            public_key=values[ENV_PUBLIC_KEY],
            secret_key=values[ENV_SECRET_KEY],
            host=values[ENV_HOST],
            environment=environment,
            release=release,
            service=service,
            redact=redact,
            capture_outputs=capture_outputs,
        )

    def new_trace_id(self) -> str:
        """A fresh trace id (32 lowercase hex characters), to put on a query's events before it starts."""
        return Langfuse.create_trace_id()

    def trace_url(self, trace_id: str) -> str:
        return trace_url(self.host, trace_id)

    @contextmanager
    def trace(
        self,
        trace_id: str,
        *,
        name: str,
        input: Any = None,  # Langfuse's own name for it
        user_id: str | None = None,
        session_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Iterator[QueryTrace]:
        """The root observation of trace `trace_id`, open while the block runs; an exception marks it ERROR."""
        root: LangfuseSpan | None = None
        with ExitStack() as stack:
            try:
                # Trace-level attributes reach every observation created inside (Langfuse filters on them).
                stack.enter_context(propagate_attributes(user_id=user_id, session_id=session_id, trace_name=name))
                root = self._client.start_observation(
                    trace_context={"trace_id": trace_id},
                    name=name,
                    as_type="span",
                    input=input,
                    metadata=dict(metadata) if metadata else None,
                )
            except Exception as exc:
                _trace_failed("start_trace", exc)
            try:
                yield QueryTrace(trace_id, root, self._redact, outputs=self.capture_outputs)
            except BaseException as exc:
                _end(root, exc, self._redact)
                raise
            _end(root, None, self._redact)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export the spans still queued, waiting at most `timeout_s`; False if that was not enough."""
        return bool(self._provider.force_flush(timeout_millis=int(timeout_s * 1000)))

    def close(self) -> None:
        """Export what is queued (bounded by the exporter's timeout) and stop the background threads."""
        if self._closed:
            return
        self._closed = True
        try:
            self._provider.shutdown()
            self._client.shutdown()
        finally:
            _forget_sdk_client(self.public_key)

    def _mask(self, *, data: Any, **_: Any) -> Any:
        return _redact_tree(self._redact, data)


def _forget_sdk_client(public_key: str) -> None:
    """Drop the SDK's per-process cache entry for `public_key`.

    The SDK keeps one resource manager per public key for the life of the process; a client created later with
    the same key (a second app in the same process, as in tests, or a restarted lifespan) would get the shut-down
    one back and silently trace nothing. The cache is private to the SDK, hence the defensive lookup.
    """
    try:
        from langfuse._client.resource_manager import LangfuseResourceManager
    except ImportError:  # pragma: no cover - a future SDK layout
        return
    instances = getattr(LangfuseResourceManager, "_instances", None)
    lock = getattr(LangfuseResourceManager, "_lock", None)
    if isinstance(instances, dict) and lock is not None:
        with lock:
            instances.pop(public_key, None)
