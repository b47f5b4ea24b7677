#!/bin/sh
# Make sure Prometheus' tools are here for the tests (promtool, prometheus, amtool): installs Debian's packages
# when it can, otherwise says in one line that those tests will be skipped. Idempotent; instant when installed.
# Never fails the build: the tests that need the binaries skip themselves with a reason.
set -u

have_all() {
    command -v promtool >/dev/null 2>&1 &&
        command -v prometheus >/dev/null 2>&1 &&
        command -v amtool >/dev/null 2>&1
}

if have_all; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-prometheus: no apt-get here; install prometheus, promtool and amtool yourself, or the Prometheus tests are skipped" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-prometheus: not root; run 'sudo apt-get install prometheus prometheus-alertmanager', or the Prometheus tests are skipped" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# The packages' post-install scripts may try to start the daemons; where there is no init system that fails
# harmlessly, and the tests start their own server anyway.
if apt-get update -qq >/dev/null &&
    apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null; then
    if have_all; then
        exit 0
    fi
fi
echo "ensure-prometheus: installing prometheus and prometheus-alertmanager with apt-get failed; the Prometheus tests are skipped" >&2
exit 0
