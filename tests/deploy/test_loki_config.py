"""Loki configs (loki/local-config.yaml, loki/production-config.yaml): the settings the project relies on, and,
where a Grafana Loki binary is at hand (LOKI_BIN or `loki` on PATH), Loki's own -verify-config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL = REPO_ROOT / "loki" / "local-config.yaml"
PRODUCTION = REPO_ROOT / "loki" / "production-config.yaml"
S3_ENV = {
    "S3_ENDPOINT": "s3.internal:9000", "LOKI_S3_BUCKET": "loki", "S3_ACCESS_KEY_ID": "key",
    "S3_SECRET_ACCESS_KEY": "secret",
}  # fmt: skip


def expand(text: str, env: dict[str, str]) -> str:
    """Loki's -config.expand-env: `${VAR}` and `${VAR:-default}`."""

    def one(m: re.Match[str]) -> str:
        return env.get(m.group(1)) or (m.group(3) if m.group(3) is not None else "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", one, text)


def load(path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    data = yaml.safe_load(expand(path.read_text(encoding="utf-8"), env or {}))
    assert isinstance(data, dict)
    return data


def test_local_config_is_single_binary_on_the_filesystem_with_tsdb_v13() -> None:
    config = load(LOCAL)
    assert config["auth_enabled"] is False, "the ruler's tenant directory is `fake` only with auth off"
    assert config["common"]["replication_factor"] == 1
    assert config["common"]["ring"]["kvstore"]["store"] == "inmemory"
    assert "filesystem" in config["common"]["storage"]
    (schema,) = config["schema_config"]["configs"]
    assert (schema["store"], schema["schema"], schema["object_store"]) == ("tsdb", "v13", "filesystem")


@pytest.mark.parametrize("path", [LOCAL, PRODUCTION], ids=["local", "production"])
def test_structured_metadata_and_retention_are_on(path: Path) -> None:
    config = load(path, S3_ENV)
    limits = config["limits_config"]
    assert limits["allow_structured_metadata"] is True
    assert re.fullmatch(r"\d+h", limits["retention_period"])
    assert config["compactor"]["retention_enabled"] is True, "without it retention_period deletes nothing"
    assert config["compactor"]["delete_request_store"]
    assert config["analytics"]["reporting_enabled"] is False


@pytest.mark.parametrize("path", [LOCAL, PRODUCTION], ids=["local", "production"])
def test_a_pushed_stream_stays_one_stream(path: Path) -> None:
    # Sharding deals a stream's entries to shard streams anew on each push: a re-sent batch showed twice in log
    # queries and refusals of all but the last shard went unreported (docs/loki.md, "Loki settings it relies on").
    limits = load(path, S3_ENV)["limits_config"]
    assert limits["shard_streams"]["enabled"] is False
    assert re.fullmatch(r"\d+MB", limits["per_stream_rate_limit"]) and int(limits["per_stream_rate_limit"][:-2]) > 3


def test_production_keeps_thirty_days_like_the_api() -> None:
    assert load(PRODUCTION, S3_ENV)["limits_config"]["retention_period"] == "720h"
    compose = yaml.safe_load((REPO_ROOT / "compose" / "docker-compose.prod.yml").read_text())
    assert compose["services"]["api"]["environment"]["QUERYLOG_RETENTION"] == "${QUERYLOG_RETENTION:-30d}"


@pytest.mark.parametrize("path", [LOCAL, PRODUCTION], ids=["local", "production"])
def test_loki_applies_the_delete_requests_erase_files(path: Path) -> None:
    assert load(path, S3_ENV)["limits_config"]["deletion_mode"] == "filter-and-delete"
    nginx = (REPO_ROOT / "compose" / "loki" / "nginx.conf").read_text()
    assert "loki/api/v1/(rules|delete)" in nginx  # the gateway sends them to the backend's compactor


@pytest.mark.parametrize("path", [LOCAL, PRODUCTION], ids=["local", "production"])
def test_ruler_reads_the_repository_rules_and_writes_recordings_to_prometheus(path: Path) -> None:
    ruler = load(path, S3_ENV)["ruler"]
    assert ruler["storage"] == {"type": "local", "local": {"directory": "/etc/loki/rules"}}
    assert ruler["enable_api"] is True
    assert ruler["remote_write"]["enabled"] is True
    assert ruler["remote_write"]["clients"]["prometheus"]["url"].endswith("/api/v1/write")
    assert (REPO_ROOT / "loki" / "rules" / "fake").is_dir(), "auth_enabled: false → tenant `fake`"


def test_local_paths_follow_the_environment() -> None:
    config = load(LOCAL, {"LOKI_DATA_DIR": "/tmp/x", "LOKI_RULES_DIR": "/repo/loki/rules"})
    assert config["common"]["path_prefix"] == "/tmp/x"
    assert config["ruler"]["storage"]["local"]["directory"] == "/repo/loki/rules"


def test_production_is_simple_scalable_on_s3_with_credentials_from_the_environment() -> None:
    text = PRODUCTION.read_text(encoding="utf-8")
    config = load(PRODUCTION, S3_ENV)
    s3 = config["common"]["storage"]["s3"]
    assert (s3["access_key_id"], s3["secret_access_key"], s3["endpoint"]) == ("key", "secret", "s3.internal:9000")
    raw = yaml.safe_load(text)["common"]["storage"]["s3"]
    for key in ("access_key_id", "secret_access_key", "endpoint", "bucketnames"):
        assert re.fullmatch(r"\$\{\w+\}", raw[key]), f"{key} must come from the environment, not the file"
    (schema,) = config["schema_config"]["configs"]
    assert (schema["store"], schema["schema"], schema["object_store"]) == ("tsdb", "v13", "s3")
    assert config["common"]["ring"]["kvstore"]["store"] == "memberlist"
    assert config["memberlist"]["join_members"], "the write, read and backend targets must find each other"
    assert "-config.expand-env=true" in text, "the header must say how to start it"
    for target in ("write", "read", "backend"):
        assert re.search(rf"^#\s+{target}\b", text, re.MULTILINE), f"the header explains the {target} target"


def _grafana_loki() -> str | None:
    candidate = os.environ.get("LOKI_BIN") or shutil.which("loki")
    if not candidate:
        return None
    version = subprocess.run([candidate, "-version"], capture_output=True, text=True, check=False)
    # Debian's `loki` package is another program (genetic linkage analysis).
    return candidate if (version.stdout + version.stderr).startswith("loki, version") else None


@pytest.mark.parametrize(
    ("path", "target"),
    [(LOCAL, "all"), (PRODUCTION, "write"), (PRODUCTION, "read"), (PRODUCTION, "backend")],
    ids=["local", "production-write", "production-read", "production-backend"],
)
def test_loki_accepts_the_config(path: Path, target: str) -> None:
    loki = _grafana_loki()
    if loki is None:
        pytest.skip("no Grafana Loki binary (set LOKI_BIN): configs checked by the tests above only")
    result = subprocess.run(
        [loki, f"-config.file={path}", "-config.expand-env=true", "-verify-config", f"-target={target}"],
        capture_output=True, text=True, check=False, env={"PATH": os.environ["PATH"], **S3_ENV},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
