#!/bin/sh
# Make sure a headless browser and CJK fonts are here for the explorer's browser test: installs Debian's
# chromium and fonts-noto-cjk when it can, otherwise says in one line that the test will be skipped.
# Idempotent; instant when installed. Never fails the build: the test skips itself with a reason.
set -u

have_all() {
    [ -x /usr/bin/chromium ] && { ! command -v fc-list >/dev/null 2>&1 || fc-list :lang=ko | grep -q .; }
}

if have_all; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no apt-get here; install chromium and a CJK font yourself, or the browser test is skipped" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-chromium: not root; run 'sudo apt-get install chromium fonts-noto-cjk', or the browser test is skipped" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
# Without a CJK font Chromium draws Korean as empty boxes; fontconfig comes with chromium and gives fc-list.
# apt's chatter goes to a log that is shown only if the install fails.
if apt-get update -qq >"$log" 2>&1 &&
    apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk fontconfig >>"$log" 2>&1 &&
    have_all; then
    rm -f "$log"
    exit 0
fi
tail -n 20 "$log" >&2
rm -f "$log"
echo "ensure-chromium: installing chromium and fonts-noto-cjk with apt-get failed; the browser test is skipped" >&2
exit 0
