#!/usr/bin/env bash
# Runs the rebalance storm of tests/tests/kills_rebalances_and_outages_lose_nothing.rs with N seeds in a row (default 50)
# and reports how many passed, with the seeds that failed, to replay with
# GOKA_RELIABILITY_SEED. Not part of CI: about 45 s a seed.
#
#   bash scripts/storm-seeds.sh [N] [FIRST_SEED]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

runs="${1:-50}"
first="${2:-$(date +%s%N)}"
source scripts/broker.sh
trap stop_test_brokers EXIT

cargo test -p goka-tests --test kills_rebalances_and_outages_lose_nothing --no-run
logs="$(mktemp -d)"
passed=0
failed=()
for i in $(seq 0 $((runs - 1))); do
  seed=$((first + i))
  if GOKA_RELIABILITY_SEED="$seed" cargo test -q -p goka-tests --test kills_rebalances_and_outages_lose_nothing \
      a_rebalance_storm -- --nocapture >"$logs/$seed.log" 2>&1; then
    passed=$((passed + 1))
    echo "seed $seed: passed"
  else
    failed+=("$seed")
    echo "seed $seed: FAILED (log $logs/$seed.log)"
  fi
done
echo "storm: $passed of $runs seeds passed${failed:+; failed: ${failed[*]}}"
