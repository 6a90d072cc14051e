#!/usr/bin/env bash
# The whole test suite: installs prerequisites, fetches the test broker (Apache Kafka 4.4's jars;
# GOKA_TEST_BROKER=tansu for the stand-in broker), and runs every test of the workspace. Each
# integration test starts its own broker on free ports and stops it when done; leftovers of
# killed tests are stopped at the end.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

bash scripts/prerequisites.sh --browser
# The interop tests build goka itself (tests/goka) with Go.
if ! command -v go >/dev/null 2>&1; then
  echo "test.sh: 'go' is not installed (Go 1.25 or newer builds the goka program of the interop tests)" >&2
  exit 1
fi
source scripts/broker.sh --persistent
trap stop_test_brokers EXIT

cargo test --workspace --all-targets "$@"
# The tests of rebalances, takeovers and killed members again under Kafka 4's consumer group
# protocol (KIP-848), which assigns on the broker and incrementally (Tansu has no such
# protocol).
if [ "${GOKA_TEST_BROKER:-kafka}" = kafka ]; then
  GOKA_TEST_GROUP_PROTOCOL=consumer cargo test -p goka-tests --test kills_rebalances_and_outages_lose_nothing \
    --test processor_counts_every_message --test processor_standby --test processor_options \
    --test faults_heal_or_stop "$@"
fi
# Doc tests (cargo test --all-targets leaves them out).
cargo test --workspace --doc "$@"
