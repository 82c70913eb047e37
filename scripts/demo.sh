#!/usr/bin/env bash
# The main job: the patrol server on its embedded SQLite store, a first administrator, the
# example site configuration, three guards' phones enrolled with one-time codes, and their
# offline logs merged into the site record. Leaves the server running; Ctrl-C stops it.
#
#   PATROL_PORT      the server's port on 127.0.0.1 (default 8080)
#   PATROL_DEMO_DIR  where the server's store, its log, the phones' stores and the tokens go
#                    (default demo-data; emptied first)
#   PATROL_BIN_DIR   use the patrol-server and patrol binaries in this directory instead of
#                    building them (the tests run the demo on their own build)
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PATROL_PORT:-8080}
DATA=${PATROL_DEMO_DIR:-demo-data}
SITE=site-1
URL="http://127.0.0.1:$PORT"
CONFIG=docs/examples/site-1.json

# Bold headings on a terminal only: a log file or a pipe gets plain text.
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
    BOLD=$'\033[1m' PLAIN=$'\033[0m'
else
    BOLD='' PLAIN=''
fi
step() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
fail() {
    printf 'demo: %s\n' "$*" >&2
    exit 1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# Checked before anything is built or deleted: a demo still running keeps its data.
if port_open; then
    fail "port $PORT on 127.0.0.1 is already in use (a demo still running?). Stop it, or run on another port: PATROL_PORT=8090 $0"
fi

if [ -n "${PATROL_BIN_DIR:-}" ]; then
    BIN=$PATROL_BIN_DIR
else
    echo "Building patrol-server and patrol (release; the first build takes a few minutes)"
    cargo build --release --quiet -p patrol-server -p patrol-cli
    BIN=target/release
fi
# Tokens and stores are for this user's eyes only.
umask 077
rm -rf "$DATA"
mkdir -p "$DATA"
LOG="$DATA/server.log"

step "Site $SITE created in a fresh embedded store ($DATA/server)"
"$BIN/patrol-server" site create "$SITE" --name "St Mary's Hospital" --data-dir "$DATA/server" 2>>"$LOG"

step "The first administrator (its token is shown once; the server keeps only its hash)"
"$BIN/patrol-server" admin create admin --data-dir "$DATA/server" >"$DATA/admin.token" 2>>"$LOG"
ADMIN_TOKEN=$(cat "$DATA/admin.token")
echo "admin token: ${ADMIN_TOKEN:0:8}… (kept in $DATA/admin.token)"

step "Server starting on $URL (its log: $LOG)"
"$BIN/patrol-server" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/server" >>"$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
started=
for _ in $(seq 300); do
    if ! kill -0 "$SERVER" 2>/dev/null; then
        tail -n 5 "$LOG" >&2 || true
        fail "the server stopped at start; its log is $LOG (last lines above)"
    fi
    if port_open; then
        started=1
        break
    fi
    sleep 0.1
done
[ -n "$started" ] || fail "the server did not open port $PORT within 30 s; its log is $LOG"

guard() { "$BIN/patrol" device --store "$DATA/$1.db" "${@:2}"; }
control() { "$BIN/patrol" control --server "$URL" --token "$ADMIN_TOKEN" "$@"; }

step "The site's checkpoints, tags and tours ($CONFIG), set by the administrator"
control config --site "$SITE" --set "$CONFIG" >/dev/null
control config --site "$SITE"

step "Each phone is enrolled once, in signal, with a one-time code from the administrator"
for g in alice bob carol; do
    code=$(control enrollment-code --site "$SITE" 2>/dev/null)
    echo "$g:"
    guard "$g" enroll --server "$URL" --code "$code"
    guard "$g" sync >/dev/null # fetches the site configuration
done

step "Three guards patrol the basement car park with no signal (nothing reaches the server)"
ALICE_SHIFT=$(guard alice shift start --guard alice 2>/dev/null)
for g in bob carol; do
    guard "$g" shift start --guard "$g" >/dev/null 2>&1
done
guard alice scan --nfc 04:A1:11 --lat 51.5171 --lon -0.1749 --accuracy 25 >/dev/null 2>&1
guard bob   scan --qr "CP7-B2-STAIRS" >/dev/null 2>&1
guard alice scan --nfc 04:A1:12 >/dev/null 2>&1
guard carol scan cp-4 --manual "tag torn off the wall" >/dev/null 2>&1
guard bob   incident --category theft --severity high --description "catalytic converter cut from car in bay 14" >/dev/null 2>&1
guard carol note "lift 3 out of service, reported to estates" >/dev/null 2>&1
guard alice scan --nfc 04:A1:13 >/dev/null 2>&1
guard bob   handover "bay 14 taped off, police informed" >/dev/null 2>&1
echo "alice's phone:"; guard alice log
echo "bob's phone:";   guard bob log

step "The guards come up to the ground floor; their phones sync"
for g in carol alice bob; do
    printf '%-6s ' "$g"; guard "$g" sync
done

step "An operator for the control room, who reads site $SITE and nothing else"
control user create control-room --role operator --site "$SITE" >"$DATA/operator.token" 2>/dev/null
OPERATOR_TOKEN=$(cat "$DATA/operator.token")
echo "operator token: ${OPERATOR_TOKEN:0:8}… (kept in $DATA/operator.token)"

step "The control room's merged site record (canonical order: server sequence)"
"$BIN/patrol" control --server "$URL" --token "$OPERATOR_TOKEN" pull --site "$SITE"

step "Device health"
"$BIN/patrol" control --server "$URL" --token "$OPERATOR_TOKEN" devices --site "$SITE"

step "Alice ends her shift and syncs; her shift log as evidence, checked offline against her phone's signing key"
guard alice shift end --note "car park quiet after bay 14" >/dev/null 2>&1
guard alice sync
ALICE_KEY=$(guard alice status | awk '/^key/ {print $2}')
control export-shift-log --site "$SITE" --shift "$ALICE_SHIFT" --out "$DATA/alice-shift.json"
"$BIN/patrol" verify "$DATA/alice-shift.json" --public-key "$ALICE_KEY"

step "Without a token, the server answers 401"
"$BIN/patrol" control --server "$URL" --token "" pull --site "$SITE" || true

step "The server keeps running at $URL (store, log and tokens in $DATA)"
cat <<EOF
Act as the administrator (sites, users, enrollment codes, the configuration):
  export PATROL_SERVER=$URL PATROL_TOKEN=\$(cat $DATA/admin.token)
  $BIN/patrol control user list
  $BIN/patrol control enrollment-code --site $SITE
Act as the control room:
  export PATROL_SERVER=$URL PATROL_TOKEN=\$(cat $DATA/operator.token)
  $BIN/patrol control pull --site $SITE
  $BIN/patrol control incidents --site $SITE
Act as alice's phone:
  $BIN/patrol device --store $DATA/alice.db scan --nfc 04:A1:15
  $BIN/patrol device --store $DATA/alice.db sync
Follow the server's log: tail -f $LOG
Ctrl-C stops the server.
EOF
wait $SERVER
