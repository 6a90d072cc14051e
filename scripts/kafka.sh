#!/usr/bin/env bash
# Apache Kafka 4.4 from Maven jars: the broker of the project's tests, examples and benchmarks.
#
#   kafka.sh libs                 fetch the jars once per machine, print the classpath folder
#   kafka.sh start [--nodes N] [--dir D] [--heap SIZE]
#                                 start N combined broker+controller nodes (1 or 3) on free
#                                 loopback ports in the background; print the bootstrap
#                                 address on stdout once every node serves
#   kafka.sh stop D               stop the nodes that `start` started in D (and no other)
#   kafka.sh node --dir D --node-id I --port P --controller-port C --voters V
#                 [--cluster-id ID] [--heap SIZE] [--advertise HOST:PORT] [--set KEY=VALUE]...
#                                 format D once, then become one node (the test harness runs
#                                 this in the foreground and owns the process)
#
# The jars come from scripts/kafka/pom.xml into ~/.cache/goka-rs (GOKA_CACHE_DIR), the Maven
# repository beside them. Every node has its own data directory and KRaft storage, formatted
# with a static controller quorum, so one node and three nodes start the same way.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION="4.4.0"
CACHE="${GOKA_CACHE_DIR:-$HOME/.cache/goka-rs}"
LIBS="$CACHE/kafka-$KAFKA_VERSION/libs"
HEAP="${GOKA_KAFKA_HEAP:-512m}"
# How long `start` waits for every node to serve before it gives up and shows their logs.
START_TIMEOUT="${GOKA_KAFKA_START_TIMEOUT:-60}"

die() {
  echo "kafka.sh: $*" >&2
  exit 1
}

ways_out="Ways out: run the demo and the examples against a Kafka cluster of your own with \
--brokers HOST:PORT (or KAFKA_BROKERS), or run everything, tests included, on the stand-in \
broker with GOKA_TEST_BROKER=tansu."

# Fetches the broker's jars once (into a temporary folder first, so an interrupted fetch never
# leaves half a classpath) and prints the folder.
fetch_libs() {
  if [ -f "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
    echo "$LIBS"
    return
  fi
  command -v java >/dev/null 2>&1 || die "'java' is not installed (Kafka needs Java 17 or newer). $ways_out"
  command -v mvn >/dev/null 2>&1 || die "'mvn' is not installed (Maven fetches Kafka's jars). $ways_out"
  mkdir -p "$CACHE"
  local tmp log
  tmp="$(mktemp -d "$CACHE/kafka-libs.XXXXXX")"
  log="$tmp/maven.log"
  echo "kafka.sh: fetching Apache Kafka $KAFKA_VERSION's jars with Maven into $LIBS" >&2
  if ! mvn -B -q -Dstyle.color=never -f "$HERE/kafka/pom.xml" -Dmaven.repo.local="$CACHE/maven" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/libs" \
    >"$log" 2>&1; then
    echo "kafka.sh: Maven could not fetch the jars of scripts/kafka/pom.xml; its last lines:" >&2
    tail -n 25 "$log" >&2
    rm -rf "$tmp"
    die "no Kafka broker. $ways_out"
  fi
  if [ ! -f "$tmp/libs/kafka_2.13-$KAFKA_VERSION.jar" ]; then
    rm -rf "$tmp"
    die "Maven finished but kafka_2.13-$KAFKA_VERSION.jar is not among the jars it copied. $ways_out"
  fi
  mkdir -p "$(dirname "$LIBS")"
  rm -rf "$LIBS"
  mv "$tmp/libs" "$LIBS"
  rm -rf "$tmp"
  echo "$LIBS"
}

# The JVM options of a node: a bounded heap and the G1 settings of Kafka's own start scripts.
jvm_opts() {
  local heap="$1"
  echo "-Xmx$heap -Xms$heap -XX:+UseG1GC -XX:MaxGCPauseMillis=20" \
    "-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent" \
    "-Djava.awt.headless=true -Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties"
}

new_cluster_id() {
  # A Kafka Uuid: 16 random bytes in URL-safe base64 without padding.
  python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="))'
}

# N distinct free ports: all sockets stay bound until every port is chosen, so the OS cannot
# hand the same port out twice (Kafka refuses a broker and a controller listener on one port).
free_ports() {
  python3 -c '
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
' "$1"
}

# Writes a node's configuration, formats its storage if it is new, and becomes the broker.
run_node() {
  local dir="" id="" port="" cport="" voters="" cluster="" heap="$HEAP" advertise="" sets=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) dir="$2"; shift 2 ;;
      --node-id) id="$2"; shift 2 ;;
      --port) port="$2"; shift 2 ;;
      --controller-port) cport="$2"; shift 2 ;;
      --voters) voters="$2"; shift 2 ;;
      --cluster-id) cluster="$2"; shift 2 ;;
      --heap) heap="$2"; shift 2 ;;
      --advertise) advertise="$2"; shift 2 ;;
      --set) sets+=("$2"); shift 2 ;;
      *) die "node: unknown argument '$1'" ;;
    esac
  done
  [ -n "$dir" ] && [ -n "$id" ] && [ -n "$port" ] && [ -n "$cport" ] && [ -n "$voters" ] ||
    die "node needs --dir, --node-id, --port, --controller-port and --voters"
  local libs nodes
  libs="$(fetch_libs)"
  nodes="$(tr ',' '\n' <<<"$voters" | grep -c .)"
  mkdir -p "$dir"
  local replicas=1 min_isr=1
  if [ "$nodes" -ge 3 ]; then
    replicas=3
    min_isr=2
  fi
  cat >"$dir/server.properties" <<EOF
# Written by scripts/kafka.sh for node $id of a $nodes-node cluster.
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://${advertise:-127.0.0.1:$port},CONTROLLER://127.0.0.1:$cport
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
# Replication fits the cluster: one node cannot hold three replicas of the internal topics.
default.replication.factor=$replicas
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$replicas
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
# Test speed: a group's first member does not wait 3 s for others, fewer internal partitions
# to create, and a log cleaner that does not take 128 MiB of a small heap.
group.initial.rebalance.delay.ms=0
offsets.topic.num.partitions=8
transaction.state.log.num.partitions=8
log.cleaner.dedupe.buffer.size=4194304
# Kafka 4's consumer group protocol (KIP-848) takes the session timeout and the heartbeat
# from the broker: the 6 s the tests' classic members ask for themselves, and a heartbeat of
# 1 s, where the defaults are 45 s and 5 s (a rebalance waits for heartbeats).
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=1000
group.consumer.heartbeat.interval.ms=1000
# Like most production clusters, no topic is created on first use: whatever needs a topic
# creates it or says that it is missing (the broker's default would create it with one
# partition, hiding a missing step).
auto.create.topics.enable=false
# A restarted node gets its leaderships back within seconds (a preferred-leader election),
# where the default checks every 5 minutes.
leader.imbalance.check.interval.seconds=5
EOF
  local kv
  for kv in "${sets[@]+"${sets[@]}"}"; do
    echo "$kv" >>"$dir/server.properties"
  done
  # shellcheck disable=SC2046
  if [ ! -f "$dir/data/meta.properties" ]; then
    [ -n "$cluster" ] || cluster="$(new_cluster_id)"
    if ! java $(jvm_opts 256m) -cp "$libs/*" \
      kafka.tools.StorageTool format -t "$cluster" -c "$dir/server.properties" \
      >"$dir/format.log" 2>&1; then
      cat "$dir/format.log" >&2
      die "node $id: formatting $dir/data failed"
    fi
  fi
  # shellcheck disable=SC2046
  exec java $(jvm_opts "$heap") -cp "$libs/*" kafka.Kafka "$dir/server.properties"
}

# Waits until 127.0.0.1:$1 accepts connections (a node opens its PLAINTEXT listener only once
# it is unfenced and serving) or its process $2 exits.
wait_serving() {
  local port="$1" pid="$2" deadline=$((SECONDS + START_TIMEOUT))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

start_cluster() {
  local nodes=1 dir="" heap="$HEAP"
  while [ $# -gt 0 ]; do
    case "$1" in
      --nodes) nodes="$2"; shift 2 ;;
      --dir) dir="$2"; shift 2 ;;
      --heap) heap="$2"; shift 2 ;;
      *) die "start: unknown argument '$1'" ;;
    esac
  done
  case "$nodes" in
    1 | 3) ;;
    *) die "--nodes takes 1 or 3 (a KRaft quorum needs a majority; 2 nodes tolerate no loss)" ;;
  esac
  fetch_libs >/dev/null
  if [ -z "$dir" ]; then
    dir="$(mktemp -d "${TMPDIR:-/tmp}/goka-kafka.XXXXXX")"
  elif ls "$dir"/node-*/pid >/dev/null 2>&1; then
    local old
    for old in "$dir"/node-*/pid; do
      if kill -0 "$(cat "$old")" 2>/dev/null; then
        die "$dir already holds a running node (PID $(cat "$old")); stop it with: bash scripts/kafka.sh stop $dir"
      fi
    done
  fi
  local cluster ports=() cports=() voters="" i chosen
  cluster="$(new_cluster_id)"
  read -r -a chosen <<<"$(free_ports $((2 * nodes)))"
  for i in $(seq 1 "$nodes"); do
    ports+=("${chosen[$((2 * i - 2))]}")
    cports+=("${chosen[$((2 * i - 1))]}")
    voters+="${voters:+,}$i@127.0.0.1:${cports[$((i - 1))]}"
  done
  local began_ns bootstrap="" pids=()
  began_ns="$(date +%s%N)"
  for i in $(seq 1 "$nodes"); do
    local node_dir="$dir/node-$i"
    mkdir -p "$node_dir"
    bash "$HERE/kafka.sh" node --dir "$node_dir" --node-id "$i" --port "${ports[$((i - 1))]}" \
      --controller-port "${cports[$((i - 1))]}" --voters "$voters" --cluster-id "$cluster" \
      --heap "$heap" >"$node_dir/kafka.log" 2>&1 </dev/null &
    pids+=("$!")
    echo "$!" >"$node_dir/pid"
    if [ -n "${GOKA_BROKER_PIDS:-}" ] && [ -d "$GOKA_BROKER_PIDS" ]; then
      : >"$GOKA_BROKER_PIDS/$!"
    fi
    bootstrap+="${bootstrap:+,}127.0.0.1:${ports[$((i - 1))]}"
  done
  for i in $(seq 1 "$nodes"); do
    if ! wait_serving "${ports[$((i - 1))]}" "${pids[$((i - 1))]}"; then
      local node_dir="$dir/node-$i"
      echo "kafka.sh: node $i (127.0.0.1:${ports[$((i - 1))]}) did not serve within ${START_TIMEOUT}s" \
        "or exited; the last lines of $node_dir/kafka.log:" >&2
      tail -n 30 "$node_dir/kafka.log" >&2
      stop_cluster "$dir"
      exit 1
    fi
  done
  local took_ms=$((($(date +%s%N) - began_ns) / 1000000))
  echo "kafka.sh: $nodes node(s) of Apache Kafka $KAFKA_VERSION serving on $bootstrap after" \
    "$((took_ms / 1000)).$(printf %03d $((took_ms % 1000))) s (data in $dir; stop with: bash scripts/kafka.sh stop $dir)" >&2
  echo "$bootstrap"
}

# Stops the nodes started in $1: SIGTERM (a controlled shutdown), SIGKILL after 30 s. A PID is
# signalled only while it is still a Kafka node, in case the OS reused it.
stop_cluster() {
  local dir="$1" file pid
  [ -d "$dir" ] || die "stop: $dir is not a folder"
  for file in "$dir"/node-*/pid; do
    [ -e "$file" ] || continue
    pid="$(cat "$file")"
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka"; then
      kill "$pid" 2>/dev/null || true
      local waited=0
      while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 300 ]; do
        sleep 0.1
        waited=$((waited + 1))
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
    if [ -n "${GOKA_BROKER_PIDS:-}" ]; then
      rm -f "$GOKA_BROKER_PIDS/$pid"
    fi
  done
}

case "${1:-}" in
  libs) fetch_libs ;;
  start) shift; start_cluster "$@" ;;
  stop) [ $# -eq 2 ] || die "usage: kafka.sh stop DIR"; stop_cluster "$2" ;;
  node) shift; run_node "$@" ;;
  *) die "usage: kafka.sh libs | start [--nodes 1|3] [--dir D] [--heap SIZE] | stop D | node ..." ;;
esac
