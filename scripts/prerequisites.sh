#!/usr/bin/env bash
# Installs what the native builds need on a fresh Debian machine (librocksdb-sys needs
# libclang for bindgen and compiles RocksDB with clang++, see .cargo/config.toml; librdkafka
# builds with make, a C/C++ compiler, zlib and pkg-config).
# Skips everything that is already there, so a warm machine pays nothing.
# `--browser` adds Chromium, which the web monitor's browser test drives headless.
set -euo pipefail

packages=(libclang-dev clang zlib1g-dev pkg-config make g++)
if [ "${1:-}" = "--browser" ]; then
  packages+=(chromium)
fi
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "prerequisites: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      SUDO=sudo
    else
      echo "prerequisites: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
      exit 1
    fi
  else
    SUDO=
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

for tool in cargo python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "prerequisites: '$tool' is not installed (Rust stable and Python 3 are required)" >&2
    exit 1
  fi
done
