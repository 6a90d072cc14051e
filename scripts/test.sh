#!/usr/bin/env bash
# The whole test suite: installs prerequisites, fetches the test broker (Apache Kafka 4.4's jars;
# GOKA_TEST_BROKER=tansu for the stand-in broker), and runs every test of the workspace. Each
# integration test starts its own broker on free ports and stops it when done; leftovers of
# killed tests are stopped at the end.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

bash scripts/prerequisites.sh --browser
source scripts/broker.sh --persistent
trap stop_test_brokers EXIT

# Everything is built first; then the suite runs in two lanes at once. Most tests wait on a
# broker (joins, session timeouts, restarts) rather than on the CPU, so the second lane takes
# about seven minutes off the run on two cores.
cargo test --workspace --all-targets --no-run "$@"

# Lane two: the tests of rebalances, takeovers and killed members again under Kafka 4's
# consumer group protocol (KIP-848), which assigns on the broker and incrementally (Tansu has
# no such protocol), then the doc tests (cargo test --all-targets leaves them out). Its output
# is printed after the first lane's.
second_lane() {
  local status=0
  if [ "${GOKA_TEST_BROKER:-kafka}" = kafka ]; then
    GOKA_TEST_GROUP_PROTOCOL=consumer cargo test --workspace --test reliability \
      --test processor_counts_every_message --test processor_options \
      --test faults_heal_or_stop "$@" || status=1
  fi
  cargo test --workspace --doc "$@" || status=1
  return "$status"
}
lane_log="$(mktemp "${TMPDIR:-/tmp}/goka-lane.XXXXXX")"
second_lane "$@" >"$lane_log" 2>&1 &
lane=$!
trap 'kill "$lane" 2>/dev/null || true; rm -f "$lane_log"; stop_test_brokers' EXIT

# Lane one: every test of the workspace.
first=0
cargo test --workspace --all-targets "$@" || first=$?
second=0
wait "$lane" || second=$?
echo
echo "=== second lane: consumer-protocol reruns and doc tests ==="
cat "$lane_log"
if [ "$first" -ne 0 ] || [ "$second" -ne 0 ]; then
  echo "test.sh: failed (all targets: exit $first; consumer-protocol reruns and doc tests: exit $second)" >&2
  exit 1
fi
