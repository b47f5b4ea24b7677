"""The Loki projection: log lines pushed to ``/loki/api/v1/push`` as Promtail would, once each. `encoding` makes
a log line its entry and entries push bodies; `client` posts one and says what the answer means; `rejections`
reads a 400; `sink` admits, delivers and checkpoints. The projector's reader keeps each stream in time order
(`querylog.logging.time_order`); retries are the projector's (`querylog.logging.projection.RetryPolicy`); the wiring
from `Settings` is `querylog.runtime`'s."""

from querylog.logging.loki.client import DEFAULT_MAX_PUSH_BYTES, LokiClient, LokiOptions
from querylog.logging.loki.encoding import LINE_FIELDS, METADATA_FIELDS, Entries, encode_lines, plan_pushes
from querylog.logging.loki.sink import LokiSink

__all__ = [
    "DEFAULT_MAX_PUSH_BYTES",
    "LINE_FIELDS",
    "METADATA_FIELDS",
    "Entries",
    "LokiClient",
    "LokiOptions",
    "LokiSink",
    "encode_lines",
    "plan_pushes",
]
