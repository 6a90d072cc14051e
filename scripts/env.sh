# Shared settings of the project's scripts; sourced, not run.
# Native builds (librocksdb, librdkafka) are slow: keep one target directory across runs
# and clones unless the caller chose another.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/goka-rs/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

# The test harness writes the PID of every broker it starts into this directory and removes
# it when it stops the broker, so a run stops only its own leftovers, never the brokers of
# another run on the same machine.
if [ -z "${GOKA_BROKER_PIDS:-}" ]; then
  GOKA_BROKER_PIDS="$(mktemp -d "${TMPDIR:-/tmp}/goka-brokers.XXXXXX")"
  export GOKA_BROKER_PIDS
  GOKA_BROKER_PIDS_OWNED=1
fi

# Stops the brokers of this run that a killed test process could not stop.
stop_test_brokers() {
  local file pid
  for file in "$GOKA_BROKER_PIDS"/*; do
    [ -e "$file" ] || continue
    pid="$(basename "$file")"
    # A PID may have been reused since: stop it only if it is still a Tansu broker or a
    # Kafka node.
    if { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -Eq "tansu broker|kafka\.Kafka"; then
      kill "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
  done
  if [ "${GOKA_BROKER_PIDS_OWNED:-}" = 1 ]; then
    rmdir "$GOKA_BROKER_PIDS" 2>/dev/null || true
  fi
}
