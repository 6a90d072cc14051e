#!/usr/bin/env bash
# The main demo. Without brokers (--brokers HOST:PORT or KAFKA_BROKERS) it starts the bundled
# test broker on a free port, runs against it and stops it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

bash scripts/prerequisites.sh
if [ -z "${KAFKA_BROKERS:-}" ] && [[ " $* " != *" --brokers"* ]]; then
  GOKA_TANSU_BIN="$(bash scripts/tansu.sh)"
  export GOKA_TANSU_BIN
fi
trap stop_test_brokers EXIT
cargo run --quiet -p goka-examples --example quickstart -- "$@"
