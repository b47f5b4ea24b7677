#!/usr/bin/env bash
# Starts the development stack (docker-compose.dev.yml) and prints where everything is.
#   compose/dev-up.sh                      # API, explorer, Loki, Grafana, Prometheus, Alertmanager, node-exporter
#   compose/dev-up.sh --profile langfuse   # and Langfuse
# Needs a running Docker engine and the compose plugin (compose/ensure-compose-validator.sh installs the plugin).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

profiles=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profiles+=(--profile "$2"); shift 2 ;;
    *) echo "dev-up.sh: unknown argument $1 (only --profile NAME)" >&2; exit 2 ;;
  esac
done

if ! docker info >/dev/null 2>&1; then
  echo "dev-up.sh: no Docker engine answers here (docker info failed). Start Docker, or run the pieces natively:" >&2
  echo "  querylog serve; LOKI_BIN=... loki/run-local.sh (see docs/deploy.md)" >&2
  exit 1
fi
docker compose -f docker-compose.dev.yml "${profiles[@]}" config -q
docker compose -f docker-compose.dev.yml "${profiles[@]}" up -d --build
cat <<'MSG'
querylog dev stack is starting:
  API          http://127.0.0.1:8000   (try: querylog demo --queries 200)
  Explorer     http://127.0.0.1:8501
  Grafana      http://127.0.0.1:3000   (no login; dashboards in the "querylog" folder)
  Loki         http://127.0.0.1:3100
  Prometheus   http://127.0.0.1:9090
  Alertmanager http://127.0.0.1:9093
MSG
