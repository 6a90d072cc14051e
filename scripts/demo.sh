#!/usr/bin/env bash
# The main demo. Without brokers (--brokers HOST:PORT or KAFKA_BROKERS) it starts a test broker
# on free ports (Apache Kafka 4.4 from Maven jars; GOKA_TEST_BROKER=tansu for the stand-in
# broker), runs against it and stops it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

bash scripts/prerequisites.sh
if [ -z "${KAFKA_BROKERS:-}" ] && [[ " $* " != *" --brokers"* ]]; then
  source scripts/broker.sh
fi
trap stop_test_brokers EXIT
cargo run --quiet -p goka-examples --example quickstart -- "$@"
