"""Personal data sent through every entry point reaches neither the log files nor the lake; harmless numbers do.

The secrets are generated here (valid check digits, Luhn-valid cards), independent of the redactor's own
labelled set, so this checks the wiring and the detectors on data they were not tuned on.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from querylog.analytics.catalog import Catalog
from querylog.config import Settings
from querylog.service.app import create_app

_rng = random.Random(20261124)


def _rrn() -> str:
    yy, mm, dd = _rng.randint(60, 99), _rng.randint(1, 12), _rng.randint(1, 28)
    body = f"{yy:02d}{mm:02d}{dd:02d}{_rng.choice('12')}{_rng.randint(0, 99999):05d}"
    total = sum(int(d) * w for d, w in zip(body, [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5], strict=True))
    return f"{body[:6]}-{body[6:]}{(11 - total % 11) % 10}"


def _card() -> str:
    digits = [4] + [_rng.randint(0, 9) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return "-".join(s[i : i + 4] for i in range(0, 16, 4))


def _phone() -> str:
    return f"010-{_rng.randint(2000, 9999)}-{_rng.randint(1000, 9999)}"


SECRETS = [_rrn() for _ in range(4)] + [_card() for _ in range(4)] + [_phone() for _ in range(4)]
SECRETS += [f"kim.minsu{_rng.randint(10, 99)}@example.org", f"j.park{_rng.randint(10, 99)}@mail.example.com"]
HARMLESS = ["005930", "52,300원", "2026-11-03", "2,651.42", "3Q24", "12.5%"]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def test_no_secret_reaches_the_log_or_the_lake(client: TestClient, settings: Settings) -> None:
    for i, secret in enumerate(SECRETS):
        harmless = HARMLESS[i % len(HARMLESS)]
        resp = client.post("/v1/chat", json={"query": f"삼성전자 {harmless} 문의, 연락처 {secret} 입니다"})
        assert resp.status_code == 200
        fb = client.post("/v1/feedback", json={"query_id": resp.json()["query_id"], "score": -1, "comment": f"제 번호 {secret}"})
        assert fb.status_code == 202
    ingest = client.post(
        "/v1/events",
        json={"events": [{"event_type": "query_received", "query_id": f"ext-{i}", "query_text": f"my id is {s}"} for i, s in enumerate(SECRETS)]},
    )
    assert ingest.status_code == 202, ingest.text
    client.app.state.querylog.projectors["parquet"].catch_up()  # type: ignore[attr-defined]

    log_bytes = b"".join(p.read_bytes() for p in settings.log_dir.glob("*.jsonl"))
    with Catalog(settings.lake_dir) as catalog:
        _, rows = catalog.query("select * from events")
    lake_text = "\n".join(str(v) for row in rows for v in row if v is not None)
    for secret in SECRETS:
        assert secret.encode() not in log_bytes, f"{secret} reached the log"
        assert secret.replace("-", "").encode() not in log_bytes
        assert secret not in lake_text, f"{secret} reached the lake"
    for harmless in HARMLESS:
        assert harmless.encode() in log_bytes, f"{harmless} was redacted"
        assert harmless in lake_text
