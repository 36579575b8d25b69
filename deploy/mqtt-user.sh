#!/bin/sh
# Add a user to the broker's password file, or give an existing one a new password, with a new
# random password (24 letters and digits). Run it from the project folder, as root on a Docker
# host (the file is handed to the broker container's user, mode 0600):
#   sudo deploy/mqtt-user.sh clockin-bridge   the bridge; its password goes to secrets/mqtt_password
#   sudo deploy/mqtt-user.sh gate1            a terminal (username = its terminal id, the <terminal>
#                                             of clockin/<terminal>/events); password printed once
# Then reload the broker: docker compose kill -s HUP mosquitto
#
# Environment: MQTT_PASSWD_FILE (default deploy/mosquitto.passwd), MQTT_SECRET_FILE (default
# secrets/mqtt_password), MQTT_PASSWD_OWNER (default 1883:1883, the user of the eclipse-mosquitto
# image; empty: leave the owner alone, e.g. for a broker installed on the host, then chown it to
# that broker's user). Needs mosquitto_passwd (Debian: package mosquitto) or docker.
set -eu

name=${1:-}
case $name in
    '' | *[!A-Za-z0-9_.-]*)
        echo "usage: $0 NAME  (clockin-bridge, or a terminal id of letters, digits, _ . -)" >&2
        exit 2 ;;
esac
if [ ${#name} -gt 64 ]; then
    echo "$0: a terminal id has at most 64 characters" >&2
    exit 2
fi

passwd_file=${MQTT_PASSWD_FILE:-deploy/mosquitto.passwd}
secret_file=${MQTT_SECRET_FILE:-secrets/mqtt_password}
owner=${MQTT_PASSWD_OWNER-1883:1883}
umask 077

password=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 24)
create=
[ -e "$passwd_file" ] || create=-c

# The password goes in on stdin (twice: mosquitto_passwd asks again), never on a command line.
if command -v mosquitto_passwd >/dev/null 2>&1; then
    printf '%s\n%s\n' "$password" "$password" |
        mosquitto_passwd $create "$passwd_file" "$name" >/dev/null
else
    dir=$(cd "$(dirname "$passwd_file")" && pwd)
    printf '%s\n%s\n' "$password" "$password" |
        docker run --rm -i --user "$(id -u):$(id -g)" -v "$dir:/work" eclipse-mosquitto:2 \
            mosquitto_passwd $create "/work/$(basename "$passwd_file")" "$name" >/dev/null
fi
chmod 600 "$passwd_file"
if [ -n "$owner" ]; then
    chown "$owner" "$passwd_file"
fi

if [ "$name" = clockin-bridge ]; then
    # A folder only root can enter, holding a file the bridge container's user can read
    # (compose bind-mounts a secret file with its owner and mode as they are here).
    mkdir -p "$(dirname "$secret_file")"
    chmod 700 "$(dirname "$secret_file")"
    printf '%s\n' "$password" >"$secret_file"
    chmod 644 "$secret_file"
    echo "clockin-bridge: password written to $secret_file"
else
    echo "$name: $password"
fi
