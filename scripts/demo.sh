#!/usr/bin/env bash
# The main job: the patrol server on its embedded SQLite store, a first administrator, three
# guards' phones enrolled with one-time codes, and their offline logs merged into the site
# record. Leaves the server running; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PATROL_PORT:-8080}
DATA=${PATROL_DEMO_DIR:-demo-data}
SITE=site-1
URL="http://127.0.0.1:$PORT"

cargo build --release --quiet -p patrol-server -p patrol-cli
BIN=target/release
rm -rf "$DATA"
mkdir -p "$DATA"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Site $SITE created in a fresh embedded store ($DATA/server)"
"$BIN/patrol-server" site create "$SITE" --name "St Mary's Hospital" --data-dir "$DATA/server"

step "The first administrator (its token is printed once; the server keeps only its hash)"
ADMIN_TOKEN=$("$BIN/patrol-server" admin create admin --data-dir "$DATA/server")
echo "admin token: ${ADMIN_TOKEN:0:8}… (in \$ADMIN_TOKEN)"

step "Server starting on $URL"
"$BIN/patrol-server" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA/server" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

guard() { "$BIN/patrol" device --store "$DATA/$1.db" "${@:2}"; }
control() { "$BIN/patrol" control --server "$URL" --token "$ADMIN_TOKEN" "$@"; }

step "Each phone is enrolled once, in signal, with a one-time code from the administrator"
for g in alice bob carol; do
    code=$(control enrollment-code --site "$SITE" 2>/dev/null)
    printf '%-6s ' "$g"; guard "$g" enroll --server "$URL" --code "$code"
done

step "Three guards patrol the basement car park with no signal (nothing reaches the server)"
for g in alice bob carol; do
    guard "$g" shift start --guard "$g" >/dev/null
done
guard alice scan cp-1 --nfc 04:A1:11 --lat 51.5171 --lon -0.1749 --accuracy 25 >/dev/null
guard bob   scan cp-7 --qr "CP7-B2-STAIRS" >/dev/null
guard alice scan cp-2 --nfc 04:A1:12 >/dev/null
guard carol scan cp-4 --manual "tag torn off the wall" >/dev/null
guard bob   incident --category theft --severity high --description "catalytic converter cut from car in bay 14" >/dev/null
guard carol note "lift 3 out of service, reported to estates" >/dev/null
guard alice scan cp-3 --nfc 04:A1:13 >/dev/null
guard bob   handover "bay 14 taped off, police informed" >/dev/null
echo "alice's phone:"; guard alice log
echo "bob's phone:";   guard bob log

step "The guards come up to the ground floor; their phones sync"
for g in carol alice bob; do
    printf '%-6s ' "$g"; guard "$g" sync
done

step "An operator for the control room, who reads site $SITE and nothing else"
OPERATOR_TOKEN=$(control user create control-room --role operator --site "$SITE" 2>/dev/null)

step "The control room's merged site record (canonical order: server sequence)"
"$BIN/patrol" control --server "$URL" --token "$OPERATOR_TOKEN" pull --site "$SITE"

step "Device health"
"$BIN/patrol" control --server "$URL" --token "$OPERATOR_TOKEN" devices --site "$SITE"

step "Alice's shift log as evidence, checked offline against her phone's signing key"
ALICE_KEY=$(guard alice status | awk '/^key/ {print $2}')
ALICE_SHIFT=$(guard alice status | awk '/^shift/ {print $2}')
control export-shift-log --site "$SITE" --shift "$ALICE_SHIFT" --out "$DATA/alice-shift.json"
"$BIN/patrol" verify "$DATA/alice-shift.json" --public-key "$ALICE_KEY"

step "Without a token, the server answers 401"
"$BIN/patrol" control --server "$URL" --token "" pull --site "$SITE" || true

step "Server still running at $URL (data in $DATA). Try:"
echo "  export PATROL_TOKEN=$OPERATOR_TOKEN"
echo "  $BIN/patrol device --store $DATA/alice.db scan cp-5 --nfc 04:A1:15"
echo "  $BIN/patrol device --store $DATA/alice.db sync"
echo "  $BIN/patrol control --server $URL pull --site $SITE --after 8"
echo "Ctrl-C stops it."
wait $SERVER
