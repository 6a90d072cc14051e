#!/usr/bin/env bash
# Builds Tansu 0.6.0 with SQLite storage once per machine (about 9 minutes on 2 cores) and
# prints the path of the binary. The pinned memory-only binary of scripts/tansu.sh loses its
# data when it stops; the broker-restart scenario of the reliability suite needs a broker that
# keeps topics, watermarks and committed offsets across restarts.
set -euo pipefail

CACHE_DIR="${GOKA_CACHE_DIR:-$HOME/.cache/goka-rs}"
ROOT_DIR="$CACHE_DIR/tansu-0.6.0-sqlite"
BIN="$ROOT_DIR/bin/tansu"

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

echo "tansu-sqlite.sh: building tansu 0.6.0 with SQLite storage (once per machine)" >&2
CARGO_TARGET_DIR="$CACHE_DIR/tansu-sqlite-build" cargo install tansu --version 0.6.0 --locked \
  --no-default-features --features libsql --root "$ROOT_DIR" >&2
if [ ! -x "$BIN" ]; then
  echo "tansu-sqlite.sh: the build did not produce $BIN" >&2
  exit 1
fi
# The build tree is only needed once.
rm -rf "$CACHE_DIR/tansu-sqlite-build"
echo "$BIN"
