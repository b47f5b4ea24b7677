"""The Loki HTTP client: how to reach Loki (URL, tenant, auth, TLS, limits) and one push, its answer sorted into
what the sink acts on (stored, refused, too large) and what is worth retrying later (raised with its stage)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import httpx

from querylog import __version__
from querylog.logging.loki.encoding import MAX_LINE_BYTES
from querylog.logging.projection import SinkSendError
from querylog.logging.redaction import shown_url

__all__ = ["DEFAULT_MAX_PUSH_BYTES", "PUSH_PATH", "LokiClient", "LokiOptions"]

PUSH_PATH: Final = "/loki/api/v1/push"
#: Promtail's and Alloy's default batch size.
DEFAULT_MAX_PUSH_BYTES: Final = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class LokiOptions:
    """How to reach Loki and which of its limits to respect. Defaults are Loki's and Promtail's own."""

    tenant: str | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    timeout_s: float = 10.0
    compression: Literal["gzip", "none"] = "gzip"
    gzip_level: int = 1
    max_push_bytes: int = DEFAULT_MAX_PUSH_BYTES
    max_line_bytes: int = MAX_LINE_BYTES
    #: Loki's ``reject_old_samples_max_age`` (1 week): older entries are refused, so they are not sent.
    max_age_s: float = 7 * 86_400.0
    #: Loki's ``creation_grace_period`` (10 min): entries further in the future are refused.
    max_future_s: float = 600.0
    #: Half of Loki's ``max_chunk_age`` (2 h): a stream refuses lines further behind its newest one.
    out_of_order_window_s: float = 3600.0
    #: Slack against clock skew when judging `max_age_s` ourselves.
    clock_margin_s: float = 60.0

    def __post_init__(self) -> None:
        if self.token is not None and (self.username is not None or self.password is not None):
            raise ValueError("Loki auth: set a bearer token or a username and password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("Loki basic auth needs both a username and a password")
        if self.ca_file is not None and self.insecure_skip_verify:
            raise ValueError("Loki TLS: a CA file and insecure_skip_verify contradict each other; choose one")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ValueError(f"Loki TLS: CA file {self.ca_file} does not exist")
        if self.timeout_s <= 0:
            raise ValueError(f"Loki timeout_s must be > 0, got {self.timeout_s}")
        if self.compression not in ("gzip", "none"):
            raise ValueError(f"Loki compression must be 'gzip' or 'none', got {self.compression!r}")
        if not 1 <= self.gzip_level <= 9:
            raise ValueError(f"gzip_level must be within 1..9, got {self.gzip_level}")
        if self.max_line_bytes < 1024:
            raise ValueError(f"max_line_bytes must be >= 1024, got {self.max_line_bytes}")
        if self.max_push_bytes < 2 * self.max_line_bytes:
            raise ValueError(
                f"max_push_bytes ({self.max_push_bytes}) must hold at least two of the longest lines "
                f"(2 × max_line_bytes = {2 * self.max_line_bytes}); Promtail's default is 1 MiB"
            )
        for name in ("max_age_s", "max_future_s", "out_of_order_window_s", "clock_margin_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def headers(self) -> dict[str, str]:
        """Headers of every request: who we are, the tenant, a bearer token (basic auth is the client's)."""
        headers = {"User-Agent": f"querylog/{__version__}"}
        if self.tenant:
            headers["X-Scope-OrgID"] = self.tenant
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def client(self, base_url: str, transport: httpx.BaseTransport | None = None) -> httpx.Client:
        verify: ssl.SSLContext | bool = not self.insecure_skip_verify
        if self.ca_file is not None:  # never with insecure_skip_verify (__post_init__)
            verify = ssl.create_default_context(cafile=str(self.ca_file))
        auth = httpx.BasicAuth(self.username, self.password) if self.username and self.password else None
        return httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(self.timeout_s),
            verify=verify,
            auth=auth,
            headers=self.headers(),
            transport=transport,
        )


class LokiClient:
    """Posts push bodies to one Loki. Answers retrying cannot change come back as ``(status, text)``: 2xx, 400, 413,
    422. The rest (timeouts, refused connections, 408, 429, 5xx; 401/403/404… which need a person) raise
    `SinkSendError` with the `stage` the `errors` counter shows, and Loki's Retry-After."""

    def __init__(
        self,
        url: str,
        options: LokiOptions,
        *,
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Loki URL must start with http:// or https://, like http://127.0.0.1:3100; got {url!r}")
        if client is not None and transport is not None:
            raise ValueError("pass either an httpx client or a transport, not both")
        self.url = url.rstrip("/")
        self.options = options
        self._http = client if client is not None else options.client(self.url, transport)
        # An injected client has its own defaults: give it the identity headers on every push.
        self._headers = {**(options.headers() if client is not None else {}), "Content-Type": "application/json"}
        if options.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._push_url = self.url + PUSH_PATH

    def push(self, body: bytes) -> tuple[int, str]:
        """POST one body (compressed as the options say, already)."""
        try:
            response = self._http.post(self._push_url, content=body, headers=self._headers)
        except httpx.TimeoutException as exc:
            raise SinkSendError(f"Loki gave no answer within {self.options.timeout_s:g}s", stage="timeout") from exc
        except httpx.TransportError as exc:
            raise SinkSendError(
                f"Loki at {shown_url(self.url)} unreachable: {type(exc).__name__}: {exc}", stage="connect"
            ) from exc
        status, text = response.status_code, response.text
        if 200 <= status < 300 or status in (400, 413, 422):
            return status, text
        said = f"Loki at {shown_url(self.url)} answered {status} to a push: {text.strip()[:300]!r}"
        if status in (408, 429) or status >= 500:
            stage = "http_5xx" if status >= 500 else f"http_{status}"
            try:
                retry_after: float | None = max(0.0, float(response.headers["Retry-After"]))
            except (KeyError, ValueError):
                retry_after = None
            raise SinkSendError(said, stage=stage, retry_after_s=retry_after)
        # 401, 403, 404…: a configuration problem. Retrying soon will not help, losing data would.
        stage = "auth" if status in (401, 403) else "http_4xx"
        raise SinkSendError(f"{said}; check the URL, tenant and credentials (QUERYLOG_LOKI_*)", stage=stage)

    def close(self) -> None:
        self._http.close()
