#!/usr/bin/env bash
# The benchmark in one command, on a fresh clone:
#   bash benches/run.sh              full run (~25 min after the release build): 10k/50k/100k items @1 s,
#                                    10k @100 ms, max rate up to 400k values/s, RSS at 10k/50k/100k/200k items
#   bash benches/run.sh --quick      short windows, no max-rate search, no RSS runs (a few minutes)
#   bash benches/run.sh --soak 30    adds a 30-minute soak at 100k items @1 s (RSS flat? zero loss?)
#   bash benches/run.sh --soak-only 30   only the soak (no cases, max rate or RSS runs)
# Further arguments go to the bench binary (see `gateway-bench --help`) and override the ones
# set here, e.g. --seconds 90 or --rss-items 10000,100000.
# Installs its peers (mosquitto, VictoriaMetrics, Node-RED) through .ci/peers.sh install-bench,
# builds the release binaries, and writes benches/results/latest.md (the soak's RSS samples:
# benches/results/soak-rss.csv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=full
soak=0
rest=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) mode=quick; shift ;;
    --soak|--soak-only)
      [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "bench: $1 needs a number of minutes" >&2; exit 2; }
      [[ "$1" == --soak-only ]] && mode=soak-only
      soak=$2; shift 2 ;;
    *) rest+=("$1"); shift ;;
  esac
done

bash .ci/peers.sh install-bench

echo "bench: building release binaries (first build compiles dependencies: several minutes)"
cargo build --release --locked -p aas-gateway -p opcua-sim --bins --example scale_client
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin=$target_dir/release

args=(--node-red benches/node-red --out benches/results/latest.md --soak-minutes "$soak")
case $mode in
  quick) args+=(--seconds 20 --baseline-seconds 15) ;;
  full) args+=(--max-items 100000 --rss-items 10000,50000,100000,200000) ;;
  soak-only) args+=(--cases "" --no-bare) ;;
esac
echo "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews CPU figures)"
exec "$bin/gateway-bench" --gateway "$bin/aas-gateway" --sim-bin "$bin/opcua-sim" \
  --client-bin "$bin/examples/scale_client" "${args[@]}" "${rest[@]}"
