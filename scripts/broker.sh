# Fetches the test broker that GOKA_TEST_BROKER selects, once per machine, before the tests,
# examples or benchmarks start it; sourced, not run (after env.sh).
#   kafka (the default)  Apache Kafka 4.4's jars, with Maven (scripts/kafka.sh)
#   tansu                the stand-in broker (scripts/tansu.sh); with --persistent also its
#                        SQLite build for the broker-restart scenario (scripts/tansu-sqlite.sh)
case "${GOKA_TEST_BROKER:-kafka}" in
  kafka)
    bash "$ROOT/scripts/kafka.sh" libs >/dev/null
    ;;
  tansu)
    GOKA_TANSU_BIN="$(bash "$ROOT/scripts/tansu.sh")"
    export GOKA_TANSU_BIN
    if [ "${1:-}" = "--persistent" ]; then
      GOKA_TANSU_SQLITE_BIN="$(bash "$ROOT/scripts/tansu-sqlite.sh")"
      export GOKA_TANSU_SQLITE_BIN
    fi
    ;;
  *)
    echo "GOKA_TEST_BROKER=$GOKA_TEST_BROKER: expected kafka (the default) or tansu" >&2
    exit 1
    ;;
esac
