#!/usr/bin/env bash
# The phone library through its generated Python bindings, against the real server. Builds
# patrol-mobile (cdylib), patrol-server and the workspace's uniffi-bindgen (debug), generates
# the Python module into target/python-bindings next to a copy of the library, and runs
# mobile-core/tests/python with the standard library's unittest. Needs python3 (tested with
# 3.11), no pip packages. Extra arguments go to cargo build (e.g. --locked).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null; then
    echo "python-tests: python3 is required for the Python binding tests" >&2
    exit 1
fi

# One cargo invocation, so the three share one feature resolution and build once.
cargo build "$@" -p patrol-mobile -p patrol-server -p uniffi-bindgen

TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET_DIR/debug"
case "$(uname -s)" in
    Darwin) LIB=libpatrol_mobile.dylib ;;
    *) LIB=libpatrol_mobile.so ;;
esac

OUT="$TARGET_DIR/python-bindings"
rm -rf "$OUT"
mkdir -p "$OUT"
"$BIN/uniffi-bindgen" generate --library "$BIN/$LIB" --language python --no-format \
    --out-dir "$OUT" >/dev/null
# The generated module loads the library from its own directory.
cp "$BIN/$LIB" "$OUT/"

PATROL_SERVER_BIN="$BIN/patrol-server" PYTHONPATH="$OUT" PYTHONDONTWRITEBYTECODE=1 \
    python3 -m unittest discover --start-directory mobile-core/tests/python --pattern 'test_*.py' -v
