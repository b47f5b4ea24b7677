#!/usr/bin/env bash
# Starts the production stack (docker-compose.prod.yml) after checking that every secret is set.
#   compose/prod-up.sh [--profile langfuse] [--check]
# --check: only validate (the compose file and the environment), start nothing; needs no Docker engine.
# Variables come from the environment or compose/.env (see compose/.env.example; QUERYLOG_COMPOSE_ENV_FILE
# names another file).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

check_only=0
profiles=()
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check_only=1; shift ;;
    --profile) profiles+=(--profile "$2"); shift 2 ;;
    *) echo "prod-up.sh: unknown argument $1 (--profile NAME, --check)" >&2; exit 2 ;;
  esac
done

# compose/.env (or QUERYLOG_COMPOSE_ENV_FILE) holds the variables; compose reads it, and so do the checks below.
env_file="${QUERYLOG_COMPOSE_ENV_FILE:-.env}"
env_args=()
if [ -f "$env_file" ]; then
  env_args=(--env-file "$env_file")
  set -a
  # shellcheck disable=SC1090
  . "$env_file"
  set +a
fi

compose=(docker compose)
if ! docker compose version >/dev/null 2>&1; then
  read -r -a compose <<<"$(./ensure-compose-validator.sh)"
fi

# 1. Every `${VAR:?}` the compose file requires (Grafana admin password, ingest token, S3 credentials), named at
#    once: compose itself stops at the first, one run per missing variable.
missing=()
for var in $(grep -v '^[[:space:]]*#' docker-compose.prod.yml | grep -o '\${[A-Za-z_][A-Za-z0-9_]*:?' | sed 's/^\${//; s/:?$//' | sort -u); do
  [ -n "${!var:-}" ] || missing+=("$var")
done
# 2. What compose cannot check without printing secrets or failing for switched-off profiles.
for var in SLACK_WEBHOOK_URL SMTP_PASSWORD; do
  [ -n "${!var:-}" ] || missing+=("$var")
done
if [[ " ${profiles[*]-} " == *" langfuse "* || ",${COMPOSE_PROFILES:-}," == *",langfuse,"* ]]; then
  for var in LANGFUSE_DB_PASSWORD LANGFUSE_NEXTAUTH_SECRET LANGFUSE_SALT; do
    [ -n "${!var:-}" ] || missing+=("$var")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "prod-up.sh: set ${missing[*]} (see compose/.env.example); nothing was started." >&2
  exit 1
fi
# 3. The compose file itself, with every variable set.
"${compose[@]}" -f docker-compose.prod.yml "${env_args[@]}" "${profiles[@]}" config -q

if [ "$check_only" = 1 ]; then
  echo "prod-up.sh: configuration is complete."
  exit 0
fi
"${compose[@]}" -f docker-compose.prod.yml "${env_args[@]}" "${profiles[@]}" up -d --build
"${compose[@]}" -f docker-compose.prod.yml "${env_args[@]}" "${profiles[@]}" ps
