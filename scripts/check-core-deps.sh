#!/usr/bin/env bash
# patrol-core must stay sans-I/O: none of these may appear anywhere in its dependency tree.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(tokio|rusqlite|reqwest|axum|hyper|uniffi|tokio-postgres|sqlx) '
tree=$(cargo tree -p patrol-core -e normal --prefix none --format '{p}' | sort -u)
if bad=$(grep -E "$forbidden" <<<"$tree"); then
    echo "patrol-core depends on I/O crates it must not use:" >&2
    echo "$bad" >&2
    exit 1
fi
echo "patrol-core is sans-I/O: no tokio, rusqlite, reqwest, axum, hyper, uniffi or database driver in its tree"
