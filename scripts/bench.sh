#!/usr/bin/env bash
# Every benchmark, side by side on the test broker (Apache Kafka 4.4; GOKA_TEST_BROKER=tansu for the stand-in), in one run: storage load and
# point gets, Emitter and View recovery against bare rdkafka, the stateful count of a
# Processor against a bare consume -> produce loop, against Quix Streams (installed into a
# virtual environment, pinned) and against Kafka Streams 4.4 (tests/peers/kafka-streams, built
# with Maven; at least once and exactly once v2) for 1, 2, 4 and 8 partitions, windows and timers, the tester, the resident memory
# of a processor working through a 5,000,000-message backlog, and end-to-end latency at a fixed rate. Prints each
# bench's table and writes the figures, the machine and the date to bench-report.json beside the target directory.
#
#   bash scripts/bench.sh              # full sizes (1,000,000 messages; several minutes)
#   bash scripts/bench.sh --quick      # small sizes, to check the runner
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

QUIX_VERSION=3.28.1
sizes=()
if [ "${1:-}" = "--quick" ]; then
  sizes=(--messages 100000)
fi

bash scripts/prerequisites.sh
source scripts/broker.sh
trap stop_test_brokers EXIT

venv="$HOME/.cache/goka-rs/quix-$QUIX_VERSION"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import quixstreams" 2>/dev/null; then
  echo "bench: installing quixstreams==$QUIX_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "quixstreams==$QUIX_VERSION"
fi
export GOKA_QUIX_PYTHON="$venv/bin/python"
GOKA_STREAMS_CLASSPATH="$(bash scripts/streams-peer.sh)"
export GOKA_STREAMS_CLASSPATH

log="$(mktemp)"
run() {
  echo
  cargo bench --quiet "$@" 2>&1 | tee -a "$log"
}
if [ "${#sizes[@]}" -gt 0 ]; then
  run -p goka --bench storage -- --rows 100000
  run -p goka-tests --bench kafka_layer -- --records 100000
  run -p goka-tests --bench processor -- "${sizes[@]}"
  run -p goka-tests --bench windows -- "${sizes[@]}"
  run -p goka-tests --bench timers -- "${sizes[@]}"
  run -p goka-tests --bench tester -- "${sizes[@]}"
  run -p goka-tests --bench backlog -- "${sizes[@]}"
  run -p goka-tests --bench latency -- --seconds 3
else
  run -p goka --bench storage
  run -p goka-tests --bench kafka_layer
  # 1, 2, 4 and 8 partitions, each beside the bare loop and Quix Streams.
  run -p goka-tests --bench processor
  # A tumbling-window count beside Quix Streams', 1 to 8 partitions.
  run -p goka-tests --bench windows
  # The count with timers rescheduled or firing per message, beside the plain count.
  run -p goka-tests --bench timers
  run -p goka-tests --bench tester
  run -p goka-tests --bench backlog
  run -p goka-tests --bench latency
fi

mkdir -p "$CARGO_TARGET_DIR"
report="$CARGO_TARGET_DIR/../bench-report.json"
python3 - "$log" "$report" <<'PY'
import datetime, json, os, sys
log, report = sys.argv[1], sys.argv[2]
benches = [json.loads(line.split(" ", 1)[1]) for line in open(log) if line.startswith("BENCH-JSON ")]
with open("/proc/meminfo") as meminfo:
    mem_kb = int(meminfo.readline().split()[1])
summary = {}
for b in benches:
    if b.get("bench") == "processor" and "ratio" in b:
        summary["processor_lowest_ratio_to_bare"] = b["ratio"]
        if "ratio_quix_after_first" in b:
            summary["processor_lowest_ratio_to_quix"] = b["ratio_quix_after_first"]
        if "ratio_streams_after_first" in b:
            summary["processor_lowest_ratio_to_kafka_streams"] = b["ratio_streams_after_first"]
    if b.get("bench") == "windows" and "ratio_quix_after_first" in b:
        summary["windows_lowest_ratio_to_quix"] = b["ratio_quix_after_first"]
    if b.get("bench") == "windows" and "ratio_streams_after_first" in b:
        summary["windows_lowest_ratio_to_kafka_streams"] = b["ratio_streams_after_first"]
    if b.get("bench") == "timers":
        for share in ("lowest_share_rescheduling", "lowest_share_firing"):
            if share in b:
                summary[f"timers_{share}"] = b[share]
out = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cores": os.cpu_count(), "memory_gib": round(mem_kb / 1024 / 1024, 1)},
    "benches": benches,
    "summary": summary,
}
with open(report, "w") as f:
    json.dump(out, f, indent=2)
print(f"\nfigures of {len(benches)} benches written to {os.path.normpath(report)}")
PY
rm -f "$log"
