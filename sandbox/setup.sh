#!/usr/bin/env bash
# Make a sandbox available for the execute stage: the Docker engine with the sandbox image, or
# bubblewrap. On a fresh Debian machine where we are root, install what is missing (docker.io,
# bubblewrap, debootstrap) and start dockerd; elsewhere, use what is there or explain what to do.
# Set COMPLEXITYNET_NO_INSTALL=1 to never install packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

engine_up() { timeout 5 docker info >/dev/null 2>&1; }

start_dockerd() {
    echo "sandbox: starting dockerd (log: /var/log/complexitynet-dockerd.log)"
    nohup dockerd >/var/log/complexitynet-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do engine_up && return 0; sleep 0.5; done
    echo "sandbox: dockerd did not come up; see /var/log/complexitynet-dockerd.log" >&2
    return 1
}

if [ "$(id -u)" = 0 ] && [ -z "${COMPLEXITYNET_NO_INSTALL:-}" ] && command -v apt-get >/dev/null; then
    missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v bwrap >/dev/null || missing+=(bubblewrap)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "sandbox: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

if ! engine_up && command -v dockerd >/dev/null && [ "$(id -u)" = 0 ]; then
    start_dockerd || true
fi

if engine_up; then
    "$PY" -m complexitynet sandbox-image
elif command -v bwrap >/dev/null && [ -x /usr/bin/python3 ]; then
    echo "sandbox: no Docker engine; the execute stage will use bwrap"
else
    echo "sandbox: neither a Docker engine nor bubblewrap is available. Install and start Docker" \
         "(or 'apt-get install bubblewrap'), then run 'make sandbox' again." >&2
    exit 1
fi
