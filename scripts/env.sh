# Shared settings of the project's scripts; sourced, not run.
# Native builds (librocksdb, librdkafka) are slow: keep one target directory across runs
# and clones unless the caller chose another.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/goka-rs/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

# Kills Tansu brokers the test harness started and could not stop (a killed test process).
stop_test_brokers() {
  pkill -f "tansu-0.6.0/tansu broker --listener-url tcp://127.0.0.1" 2>/dev/null || true
  pkill -f "tansu-0.6.0-sqlite/bin/tansu broker --listener-url tcp://127.0.0.1" 2>/dev/null || true
}
