#!/usr/bin/env bash
# What the test suite needs from Debian: mosquitto (required: the tests start their own brokers),
# chromium (the status-page test loads the page in it), faketime (the clock-jump fault test) and
# openssl (the TLS test makes its certificates); those three are skipped, saying why, without.
# prometheus brings promtool, which checks deploy/prometheus/alerts.yml (skipped, saying why,
# without); its recommended node exporter is not needed for that, so it is left out.
# debootstrap and systemd-container (systemd-nspawn) let tests/test_boot.py boot a Debian root
# and install the bridge in it as the README says (skipped, saying why, without); installed
# without recommends, or libnss-mymachines edits this machine's nsswitch.conf.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
have mosquitto || missing+=(mosquitto mosquitto-clients)
have chromium || missing+=(chromium)
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || missing+=(faketime)
have openssl || missing+=(openssl)
have promtool || missing+=(prometheus)
have debootstrap || missing+=(debootstrap)
have systemd-nspawn || missing+=(systemd-container)
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing with apt-get: ${missing[*]} (the tests start their own mosquitto brokers)"
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "WARNING: cannot install ${missing[*]} here (need root and apt-get)." >&2
else
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || echo "WARNING: apt-get update failed" >&2
    for package in "${missing[@]}"; do
        extra=()
        case $package in
            prometheus | debootstrap | systemd-container) extra=(--no-install-recommends) ;;
        esac
        apt-get install -y -qq "${extra[@]}" "$package" >/dev/null \
            || echo "WARNING: could not install $package" >&2
    done
fi

if ! have mosquitto; then
    echo "ERROR: mosquitto is not installed, and the broker tests cannot run without it." >&2
    echo "       Install it, e.g. 'sudo apt-get install mosquitto mosquitto-clients'." >&2
    exit 1
fi
have chromium || echo "NOTE: chromium is missing: the status-page browser test will be skipped." >&2
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 \
    || echo "NOTE: faketime is missing: the clock-jump fault test will be skipped." >&2
have promtool \
    || echo "NOTE: promtool (Debian's prometheus) is missing: the alert rules check will be skipped." >&2
{ have debootstrap && have systemd-nspawn; } \
    || echo "NOTE: debootstrap or systemd-nspawn is missing: the install-and-boot test will be skipped." >&2
# Debian's mosquitto package may start a system broker on 1883; the tests use their own ports.
exit 0
