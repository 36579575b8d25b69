#!/usr/bin/env bash
# The tests start their own mosquitto broker; install Debian's package when it is missing.
set -euo pipefail
if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then
    exit 0
fi
echo "mosquitto is not installed: installing it with apt-get (the tests start their own broker)"
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ERROR: cannot install mosquitto here (need root and apt-get)." >&2
    echo "       Install it yourself, e.g. 'sudo apt-get install mosquitto mosquitto-clients'." >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq mosquitto mosquitto-clients >/dev/null; }; then
    echo "ERROR: apt-get could not install mosquitto; the broker tests cannot run." >&2
    exit 1
fi
# Debian's package starts a system broker on 1883; the tests use their own ports.
echo "mosquitto installed: $(/usr/sbin/mosquitto -h 2>/dev/null | head -1 || true)"
