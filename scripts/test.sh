#!/usr/bin/env bash
# The whole test suite: installs prerequisites, fetches the pinned test broker, and runs every
# test of the workspace. Each integration test starts its own broker on a free port and stops
# it when done; leftovers of killed tests are stopped at the end.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

bash scripts/prerequisites.sh --browser
GOKA_TANSU_BIN="$(bash scripts/tansu.sh)"
export GOKA_TANSU_BIN
# The broker-restart scenario needs a broker that keeps its data: built once per machine.
GOKA_TANSU_SQLITE_BIN="$(bash scripts/tansu-sqlite.sh)"
export GOKA_TANSU_SQLITE_BIN
trap stop_test_brokers EXIT

cargo test --workspace --all-targets "$@"
# Doc tests (cargo test --all-targets leaves them out).
cargo test --workspace --doc "$@"
