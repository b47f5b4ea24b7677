#!/bin/sh
# Make sure wrk is here for `querylog bench`'s api group: installs Debian's package when it can, otherwise says in
# one line that the group falls back to its Python load generator (and the result says so). Idempotent; instant
# when installed. Never fails the bench.
set -u

if command -v wrk >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-wrk: no apt-get here; install wrk yourself, or the api bench uses bench/api_load.py (Python threads)" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-wrk: not root; run 'sudo apt-get install wrk', or the api bench uses bench/api_load.py (Python threads)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends wrk >/dev/null && command -v wrk >/dev/null 2>&1; then
    exit 0
fi
echo "ensure-wrk: installing wrk with apt-get failed; the api bench uses bench/api_load.py (Python threads)" >&2
exit 0
