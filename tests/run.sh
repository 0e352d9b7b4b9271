#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: installs the real test peers (mosquitto,
# VictoriaMetrics as the ILP server, a Python venv with asyncua and the AAS validators) if they
# are missing, checks formatting and lints, then runs every test. Tests start their own peers
# on free loopback ports and stop them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# A fresh, empty temp dir for the whole run, removed afterwards: tests that share a fixed path
# under /tmp (and pass only once an earlier run created it) fail here as on a fresh machine.
RUN_TMP=$(mktemp -d "${TMPDIR:-/tmp}/aas-gateway-tests.XXXXXX")
trap 'rm -rf "$RUN_TMP"' EXIT
export TMPDIR=$RUN_TMP

echo "== installing test peers"
bash .ci/peers.sh install

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo check --no-default-features (the edge build: no demo, no bench)"
cargo check --locked -p aas-gateway --no-default-features --bins

echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
