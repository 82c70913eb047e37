#!/usr/bin/env bash
# The test suite: every crate's unit and integration tests and the end-to-end tests, which
# start the real patrol-server binary on loopback and drive real device stores; then the phone
# library through its generated Python bindings against the real server; then the API fuzzed
# against its own OpenAPI document (schemathesis, installed into a virtualenv from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets "$@"
scripts/python-tests.sh
scripts/api-fuzz.sh
