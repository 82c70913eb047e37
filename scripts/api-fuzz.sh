#!/usr/bin/env bash
# The API against its own description: starts the real patrol-server on a loopback port with a
# temporary data directory, seeds it (a site, an administrator, a phone that recorded and synced
# a shift, a second enrolled device whose credential the fuzzer uses), and runs schemathesis
# with all of its checks against the OpenAPI document the server serves (`GET /openapi.json`),
# as the administrator and, for `POST /api/v1/sync`, as the device. Exits non-zero on any
# failure: a 5xx, a status, content type, header or body the document does not declare, a
# request the document allows that the server refuses or the other way round, a route that
# ignores its credential. See scripts/api-fuzz/schemathesis.toml for the settings and the few
# rules a JSON Schema cannot state.
#
# Needs python3 with its venv module (Debian: python3-venv). Installs schemathesis and its
# dependencies, pinned with hashes (scripts/api-fuzz/requirements.txt), from PyPI into a
# virtualenv in the cargo target directory, once per change of that file. The fuzzer talks only
# to the server on 127.0.0.1. Extra arguments go to cargo build (e.g. --locked).
#
# Environment: API_FUZZ_EXAMPLES (test cases per operation and phase, default 40),
# API_FUZZ_SEED (default fixed, so that a run is repeatable; `random` for a new one each run),
# API_FUZZ_DATABASE_URL (an empty PostgreSQL database to keep the record in instead of SQLite in
# the temporary directory). The server and the CLI otherwise run with their defaults: no
# PATROL_* variable of the caller's reaches them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
while read -r name; do unset "$name"; done < <(compgen -e | grep '^PATROL_' || true)
if [ -n "${API_FUZZ_DATABASE_URL:-}" ]; then
    export PATROL_DATABASE_URL=$API_FUZZ_DATABASE_URL
fi

EXAMPLES=${API_FUZZ_EXAMPLES:-40}
SEED=${API_FUZZ_SEED:-160716}

if ! command -v python3 >/dev/null; then
    echo "api-fuzz: python3 is required (with its venv module; Debian: python3-venv)" >&2
    exit 1
fi

cargo build "$@" -p patrol-server -p patrol-cli
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET_DIR/debug"

# The virtualenv, rebuilt when the pinned requirements change.
VENV="$TARGET_DIR/api-fuzz-venv"
REQUIREMENTS=scripts/api-fuzz/requirements.txt
STAMP="$VENV/requirements.sha256"
WANT=$(python3 -c 'import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$REQUIREMENTS")
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
    echo "api-fuzz: installing schemathesis into $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV"; then
        echo "api-fuzz: python3 cannot make a virtualenv (Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --require-hashes --only-binary :all: -r "$REQUIREMENTS"
    echo "$WANT" >"$STAMP"
fi

DATA=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA"
}
trap cleanup EXIT

SITE=site-1
"$BIN/patrol-server" site create "$SITE" --name "Fuzzed site" --data-dir "$DATA/server" >/dev/null
ADMIN_TOKEN=$("$BIN/patrol-server" admin create fuzz-admin --data-dir "$DATA/server" 2>/dev/null)
# The token the token-rotation routes are driven with (see schemathesis.toml): rotating it ends
# it, which must not end the run. An administrator of the site only, so that it cannot give
# fuzz-admin a new token either.
ROTATOR_TOKEN=$("$BIN/patrol-server" admin create fuzz-rotator --site "$SITE" \
    --data-dir "$DATA/server" 2>/dev/null)

# Port 0: the server picks a free port and prints the address it bound. The fuzzer is one
# client that presents wrong and missing credentials on purpose, thousands of times: with the
# default failed-authentication throttle it would lock itself out within seconds and see only
# 429s (and from the third, slowed answers), so the throttle is set out of its reach
# (tests/e2e/throttle.rs holds the throttle).
"$BIN/patrol-server" serve --listen 127.0.0.1:0 --data-dir "$DATA/server" \
    --auth-slow-after 1000000 --auth-max-failures 1000000 \
    >"$DATA/server.out" 2>"$DATA/server.log" &
SERVER_PID=$!
URL=
for _ in $(seq 200); do
    URL=$(sed -n 's/^listening on \(http:\/\/127\.0\.0\.1:[0-9]*\)$/\1/p' "$DATA/server.out")
    [ -n "$URL" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        cat "$DATA/server.log" >&2
        echo "api-fuzz: patrol-server exited before it was listening" >&2
        exit 1
    fi
    sleep 0.05
done
if [ -z "$URL" ]; then
    echo "api-fuzz: patrol-server did not say where it listens" >&2
    exit 1
fi

# A phone with a shift's events in the feed, an incident with an attachment and a panic alarm
# to act on.
control() { "$BIN/patrol" control --server "$URL" --token "$ADMIN_TOKEN" "$@"; }
phone() { "$BIN/patrol" device --store "$DATA/phone.db" "$@" >/dev/null; }
phone enroll --server "$URL" --code "$(control enrollment-code --site "$SITE")"
phone shift start --guard guard-1
phone scan cp-1 --nfc 04:A1:11 --lat 51.5171 --lon -0.1749 --accuracy 25
INCIDENT=$("$BIN/patrol" device --store "$DATA/phone.db" incident --category theft \
    --severity high --description "door forced in bay 14")
# A photo attached to it, which the sync below uploads: the attachment routes reach real bytes.
head -c 3000 /dev/urandom >"$DATA/bay14.jpg"
phone attach --incident "$INCIDENT" "$DATA/bay14.jpg"
phone panic
phone note "lift 3 out of service"
phone sync

# A second device, enrolled through the API, whose credential the fuzzer syncs with.
DEVICE_CREDENTIAL=$(python3 - "$URL" "$(control enrollment-code --site "$SITE")" <<'EOF'
import json, sys, urllib.request
url, code = sys.argv[1], sys.argv[2]
request = urllib.request.Request(
    f"{url}/api/v1/enroll",
    data=json.dumps({"code": code}).encode(),
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(request, timeout=10) as response:
    print(json.load(response)["credential"])
EOF
)

# The settings, with the seeded records' ids for the fuzzer to draw from.
CONFIG="$DATA/schemathesis.toml"
cp scripts/api-fuzz/schemathesis.toml "$CONFIG"
python3 scripts/api-fuzz/dictionaries.py "$URL" "$ADMIN_TOKEN" "$SITE" >>"$CONFIG"

# schemathesis writes its reports and hypothesis its example database in the working
# directory: keep both in the temporary one. Loopback only: no proxy.
mkdir -p "$DATA/fuzz"
cd "$DATA/fuzz"
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export NO_PROXY=127.0.0.1 no_proxy=127.0.0.1
export PATROL_FUZZ_USER_TOKEN=$ADMIN_TOKEN PATROL_FUZZ_DEVICE_CREDENTIAL=$DEVICE_CREDENTIAL
export PATROL_FUZZ_ROTATOR_TOKEN=$ROTATOR_TOKEN
export SCHEMATHESIS_HOOKS="$ROOT/scripts/api-fuzz/hooks.py"
[ "$SEED" = random ] && SEED_ARGS=() || SEED_ARGS=(--seed "$SEED")
status=0
"$VENV/bin/schemathesis" --config-file "$CONFIG" \
    run "$URL/openapi.json" --checks all --max-examples "$EXAMPLES" "${SEED_ARGS[@]}" \
    --workers 1 --no-color || status=$?
if [ "$status" -ne 0 ]; then
    echo "api-fuzz: the server and its OpenAPI document disagree (see above); the server's log:" >&2
    grep -E ' (ERROR|WARN) ' "$DATA/server.log" | tail -n 50 >&2 || true
fi
exit "$status"
