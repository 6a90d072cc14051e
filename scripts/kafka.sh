#!/usr/bin/env bash
# Apache Kafka 4.4 from Maven jars, from the shell: the project's goka-broker program (the crate
# goka-broker, which the tests, examples and benchmarks use as a library), built on first use.
#
#   kafka.sh libs                  fetch the jars once per machine, print their folder
#   kafka.sh start [--nodes 1|3] [--dir D] [--heap SIZE] [--set KEY=VALUE]...
#                                  start in the background on free loopback ports; print the
#                                  bootstrap address once every node serves
#   kafka.sh stop D                stop the nodes that `start` started in D (and no other)
#   kafka.sh run [--nodes 1|3] ... in the foreground until Ctrl-C
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The target folder of env.sh (not sourced here: it would make a PID folder for nothing).
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/goka-rs/target}"
export CARGO_TARGET_DIR

cargo build --quiet --manifest-path "$ROOT/Cargo.toml" -p goka-broker >&2
broker="$CARGO_TARGET_DIR/debug/goka-broker"
case "${1:-}" in
  libs) exec "$broker" fetch --kind kafka ;;
  start) shift; exec "$broker" start --kind kafka "$@" ;;
  stop) exec "$broker" "$@" ;;
  run) shift; exec "$broker" --kind kafka "$@" ;;
  *)
    echo "usage: kafka.sh libs | start [--nodes 1|3] [--dir D] [--heap SIZE] | stop D | run ..." >&2
    exit 1
    ;;
esac
