#!/usr/bin/env bash
# The benchmark in one command, on a fresh clone:
#   bash benches/run.sh            full run (~15 min after the release build): 10k/50k/100k items @1 s, 10k @100 ms, max rate
#   bash benches/run.sh --quick    short windows, no max-rate search (a few minutes)
# Extra arguments go to the bench binary (see `gateway-bench --help`), e.g. --seconds 90.
# Installs its peers (mosquitto, VictoriaMetrics, Node-RED) through .ci/peers.sh install-bench,
# builds the release binaries, and writes benches/results/latest.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash .ci/peers.sh install-bench

echo "bench: building release binaries (first build compiles dependencies: several minutes)"
cargo build --release --locked -p aas-gateway -p opcua-sim --bins --example scale_client
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target_dir/release

args=(--node-red benches/node-red --out benches/results/latest.md)
if [[ "${1:-}" == --quick ]]; then
  shift
  args+=(--seconds 20 --baseline-seconds 15)
else
  args+=(--max-items 100000)
fi
echo "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews CPU figures)"
exec "$bin/gateway-bench" --gateway "$bin/aas-gateway" --sim-bin "$bin/opcua-sim" \
  --client-bin "$bin/examples/scale_client" "${args[@]}" "$@"
