#!/usr/bin/env bash
# The test suite: every crate's unit and integration tests and the end-to-end tests, which
# start the real patrol-server binary on loopback and drive real device stores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets "$@"
