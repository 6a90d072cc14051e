#!/usr/bin/env bash
# Builds the Kafka Streams peer of the benchmarks (tests/peers/kafka-streams, Kafka Streams
# 4.4.0 from Maven, into the Maven repository of ~/.cache/goka-rs) and prints the classpath
# that runs it: its classes, then its dependencies' jars.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peer="$ROOT/tests/peers/kafka-streams"
cache="${GOKA_CACHE_DIR:-$HOME/.cache/goka-rs}"
log="$(mktemp)"
if ! mvn -B -q -Dstyle.color=never -f "$peer/pom.xml" -Dmaven.repo.local="$cache/maven" \
  compile dependency:build-classpath -Dmdep.outputFile="$peer/target/classpath.txt" >"$log" 2>&1; then
  echo "streams-peer.sh: Maven could not build the Kafka Streams peer; its last lines:" >&2
  tail -n 25 "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
echo "$peer/target/classes:$(cat "$peer/target/classpath.txt")"
