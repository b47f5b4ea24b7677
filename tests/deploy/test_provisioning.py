"""Grafana provisioning: datasources with the uids the dashboards use, in dev and prod; the dashboard provider
reads where compose mounts the generated JSON."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = REPO_ROOT / "grafana" / "provisioning"
COMPOSE = REPO_ROOT / "compose"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def datasources(variant: str) -> dict[str, dict[str, Any]]:
    data = load(PROVISIONING / "datasources" / f"{variant}.yml")
    assert data["apiVersion"] == 1
    return {ds["uid"]: ds for ds in data["datasources"]}


@pytest.mark.parametrize("variant", ["dev", "prod"])
def test_datasources_have_the_fixed_uids_and_types(variant: str) -> None:
    by_uid = datasources(variant)
    assert set(by_uid) == {"loki", "prometheus"}
    assert by_uid["loki"]["type"] == "loki" and by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["loki"]["isDefault"] is True
    for ds in by_uid.values():
        assert ds["access"] == "proxy" and ds["editable"] is False


def test_dev_datasources_point_at_the_dev_compose_services() -> None:
    by_uid = datasources("dev")
    services = load(COMPOSE / "docker-compose.dev.yml")["services"]
    for uid, port in (("loki", 3100), ("prometheus", 9090)):
        assert by_uid[uid]["url"] == f"http://{uid}:{port}"
        assert uid in services


def test_prod_datasources_take_every_address_and_credential_from_the_environment() -> None:
    by_uid = datasources("prod")
    for ds in by_uid.values():
        for key in ("url", "basicAuthUser"):
            assert re.fullmatch(r"\$\{\w+\}", ds[key]), f"{ds['name']}.{key} must come from the environment"
        assert re.fullmatch(r"\$\{\w+\}", ds["secureJsonData"]["basicAuthPassword"])
    text = (PROVISIONING / "datasources" / "prod.yml").read_text(encoding="utf-8")
    used = set(re.findall(r"\$\{(\w+)\}", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))))
    grafana_env = load(COMPOSE / "docker-compose.prod.yml")["services"]["grafana"]["environment"]
    assert used <= set(grafana_env), f"prod compose does not pass {sorted(used - set(grafana_env))} to Grafana"


def test_query_id_links_escape_the_dollar_for_provisioning() -> None:
    for variant in ("dev", "prod"):
        (field,) = datasources(variant)["loki"]["jsonData"]["derivedFields"]
        assert field["datasourceUid"] == "loki"
        # Grafana expands $VAR in provisioning files; $$ keeps ${__value.raw} for the link itself.
        assert "$${__value.raw}" in field["url"]


@pytest.mark.parametrize("compose_file", ["docker-compose.dev.yml", "docker-compose.prod.yml"])
def test_dashboard_provider_reads_where_compose_mounts_the_dashboards(compose_file: str) -> None:
    (provider,) = load(PROVISIONING / "dashboards" / "querylog.yml")["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    grafana = load(COMPOSE / compose_file)["services"]["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    assert mounts[provider["options"]["path"]] == "../grafana/dashboards"
    variant = "dev" if "dev" in compose_file else "prod"
    assert mounts["/etc/grafana/provisioning/datasources/querylog.yml"] == (
        f"../grafana/provisioning/datasources/{variant}.yml"
    )
