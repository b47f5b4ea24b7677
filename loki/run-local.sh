#!/usr/bin/env bash
# Runs a Loki binary you already have (no Docker) with loki/local-config.yaml and the repository's ruler
# rules, data in a throw-away directory. For the live tests:
#   LOKI_BIN=/path/to/loki loki/run-local.sh &      # wait for: curl -s localhost:3100/ready → ready
#   LOKI_URL=http://127.0.0.1:3100 .venv/bin/pytest tests/deploy -q
# Any extra arguments are passed to Loki (e.g. -log.level=debug).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
loki_bin="${LOKI_BIN:-$(command -v loki || true)}"
if [ -z "$loki_bin" ] || ! "$loki_bin" -version 2>&1 | grep -q '^loki, version'; then
  echo "run-local.sh: no Grafana Loki binary found: set LOKI_BIN to one (loki-linux-amd64 from" \
    "https://github.com/grafana/loki/releases, 3.4 or newer; Debian's 'loki' package is another program)." >&2
  exit 2
fi

data_dir="${LOKI_DATA_DIR:-$(mktemp -d -t querylog-loki.XXXXXX)}"
export LOKI_DATA_DIR="$data_dir"
export LOKI_RULES_DIR="${LOKI_RULES_DIR:-$here/rules}"
# Nothing listens there outside compose: the ruler logs failed sends and carries on.
export LOKI_ALERTMANAGER_URL="${LOKI_ALERTMANAGER_URL:-http://127.0.0.1:9093}"
export LOKI_REMOTE_WRITE_URL="${LOKI_REMOTE_WRITE_URL:-http://127.0.0.1:9090/api/v1/write}"
echo "run-local.sh: Loki data in $LOKI_DATA_DIR, rules from $LOKI_RULES_DIR" >&2
exec "$loki_bin" -config.file="$here/local-config.yaml" -config.expand-env=true "$@"
