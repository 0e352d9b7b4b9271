#!/usr/bin/env bash
# Real test peers: Mosquitto (MQTT), VictoriaMetrics (ILP over HTTP/TCP), PostgreSQL (runs the LinkedSegment SQL),
# plus the tools the tests call (mosquitto_pub/sub, curl, openssl, python3 -m venv, headless chromium + chromedriver),
# Python venv (asyncua, AAS validators, Prometheus parsers, pysparkplug), node-opcua (second independent OPC UA server, tests/peers/node-opcua/).
#
#   .ci/peers.sh install   apt packages + .venv/ from .ci/requirements.txt + `npm ci` in tests/peers/node-opcua and tests/peers/aas-aid (idempotent)
#   .ci/peers.sh install-bench   also Node-RED + node-red-contrib-opcua (npm ci into benches/node-red/,
#                          from its committed package-lock.json; idempotent) for the benchmark baseline
#   .ci/peers.sh start     mosquitto + VictoriaMetrics on free 127.0.0.1 ports; writes .peers/env
#   .ci/peers.sh stop      stops them (pid files), removes their temp dir; safe to repeat
#   .ci/peers.sh env       prints .peers/env
#   source .ci/peers.sh start|env   same, then exports the .peers/env variables into the caller
#
# VictoriaMetrics 1.79 (Debian) as an ILP sink, seen here (line `m,asset=a f=... TS` -> series `m_f{asset="a"}`):
# - /write answers 204 to everything, even a malformed line (that line is skipped, logged, and
#   vm_rows_invalid_total{type="influx"} grows; the other lines of the body are stored): always read back.
# - double 1.5 -> 1.5; integer 5i -> 5 and 7u -> 7 (stored as float64: 9007199254740993i -> ...992);
#   boolean true/T -> 1, false -> 0; string s="x" -> 0 (!), s="12.5" -> 12.5 (strings are parsed as numbers
#   or become 0); NaN is dropped; +-Inf are kept but exported as bare +Inf/-Inf, which is not valid JSON.
# - timestamps are kept in ms: ns 1700000000123456789 -> 1700000000123 (truncated, not rounded; sub-ms lost);
#   ?precision=ms works; a bare 10-digit 1700000002 was taken as seconds; no timestamp -> arrival time (ms).
# - Freshly written data is NOT readable at once. To read it back at once:
#   1. GET /internal/force_flush first (else ~1 s of buffering, and a series queried before it existed can
#      stay invisible for 10-30 s from a cached empty answer);
#   2. pass an explicit future `end` to /api/v1/export (e.g. &end=4000000000): the default end excludes
#      samples of the current second.
#   e.g. curl -s $ILP_HTTP_URL/internal/force_flush
#        curl -sg "$ILP_HTTP_URL/api/v1/export?match[]={__name__=~\"machine_.*\"}&end=4000000000"
#   Export is JSON lines: {"metric":{"__name__":"machine_value_f64","asset":"cnc1"},"values":[1.5],"timestamps":[ms]}
# - Re-writing a sample (same series and timestamp) keeps both (no dedup flag set): counts stay exact.
# - ILP over TCP (-influxListenAddr, ILP_TCP_ADDR) stores the same way, but asynchronously: poll after sending.

PEERS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS_DIR=${PEERS_DIR:-$PEERS_ROOT/.peers}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then # sourced: run in a child shell, export the env into the caller
  if [[ -n "${1:-}" && "$1" != env ]]; then PEERS_DIR=$PEERS_DIR bash "${BASH_SOURCE[0]}" "$@" || return; fi
  if [[ "${1:-env}" == start || "${1:-env}" == env ]]; then
    [[ -f "$PEERS_DIR/env" ]] || { echo "peers: $PEERS_DIR/env missing (run .ci/peers.sh start)" >&2; return 1; }
    set -a
    # shellcheck disable=SC1091
    . "$PEERS_DIR/env"
    set +a
  fi
  return 0
fi

set -euo pipefail
# curl, openssl and python3-venv are used by the tests and by `start`; minimal images lack them.
# chromium + chromium-driver: the status page's browser tests (tests/status_page.rs, WebDriver).
APT_PKGS=(mosquitto mosquitto-clients victoria-metrics postgresql python3-venv curl openssl chromium chromium-driver)
VENV=$PEERS_ROOT/.venv
REQS=$PEERS_ROOT/.ci/requirements.txt

say() { echo "peers: $*"; }
die() { echo "peers: ERROR: $*" >&2; exit 1; }
run_logged() { # run quietly; on failure show the output and fail
  local log; log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then tail -n 40 "$log" >&2; rm -f "$log"; die "failed: $*"; fi
  rm -f "$log"
}

stop_system_service() { # a package's own service must not hold ports or run beside ours
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$1" 2>/dev/null; then
    say "stopping and disabling system service $1"; systemctl disable --now "$1" >/dev/null 2>&1
  elif [[ -x /etc/init.d/$1 ]] && service "$1" status >/dev/null 2>&1; then
    say "stopping system service $1"; service "$1" stop >/dev/null 2>&1
    update-rc.d "$1" disable >/dev/null 2>&1 || true
  fi
}

# fmt and clippy run before the tests: say how to get them instead of failing half-way.
check_rust_tools() {
  cargo fmt --version >/dev/null 2>&1 ||
    die "rustfmt is missing: rustup component add rustfmt (or apt-get install rustfmt)"
  cargo clippy --version >/dev/null 2>&1 ||
    die "clippy is missing: rustup component add clippy (or apt-get install rust-clippy)"
}

install() {
  check_rust_tools
  local missing=() p
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    run_logged apt-get update -qq
    run_logged apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    say "apt: ${APT_PKGS[*]} already installed"
  fi
  stop_system_service mosquitto
  stop_system_service victoria-metrics

  local want; want=$(sha256sum "$REQS" | cut -d' ' -f1)
  if [[ -x $VENV/bin/python && "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" == "$want" ]]; then
    say "venv: $VENV up to date"
  else
    say "venv: installing $REQS into $VENV"
    [[ -x $VENV/bin/python ]] || run_logged python3 -m venv "$VENV"
    run_logged "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS"
    echo "$want" >"$VENV/.requirements.sha256"
  fi
  "$VENV/bin/python" -c 'import asyncua, aas_core3, basyx.aas, aas_test_engines, prometheus_client.openmetrics.parser, pysparkplug' ||
    die "venv: imports failed"
  say "venv: asyncua, aas_core3, basyx.aas, aas_test_engines, prometheus_client, pysparkplug import"
  install_node_peer
}

NODE_PEER=$PEERS_ROOT/tests/peers/node-opcua
install_node_peer() { # node-opcua from package-lock.json; redone only when the lock file changes
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "apt: installing nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    run_logged apt-get update -qq
    run_logged apt-get install -y -qq --no-install-recommends nodejs npm
  fi
  local want; want=$(sha256sum "$NODE_PEER/package-lock.json" | cut -d' ' -f1)
  if [[ -d $NODE_PEER/node_modules/node-opcua && "$(cat "$NODE_PEER/node_modules/.lock.sha256" 2>/dev/null)" == "$want" ]]; then
    say "npm: node-opcua up to date in $NODE_PEER"
  else
    say "npm: npm ci in $NODE_PEER"
    (cd "$NODE_PEER" && run_logged npm ci --no-audit --no-fund)
    echo "$want" >"$NODE_PEER/node_modules/.lock.sha256"
  fi
  (cd "$NODE_PEER" && node -e 'require("node-opcua")') || die "npm: node-opcua does not load"
  say "npm: node-opcua $(cd "$NODE_PEER" && node -p 'require("node-opcua/package.json").version') loads"
  install_aid_peer
}

AID_PEER=$PEERS_ROOT/tests/peers/aas-aid
install_aid_peer() { # @thingweb/aas-aid (independent AID reader) from package-lock.json
  local want; want=$(sha256sum "$AID_PEER/package-lock.json" | cut -d' ' -f1)
  if [[ -d $AID_PEER/node_modules/@thingweb/aas-aid && "$(cat "$AID_PEER/node_modules/.lock.sha256" 2>/dev/null)" == "$want" ]]; then
    say "npm: @thingweb/aas-aid up to date in $AID_PEER"
  else
    say "npm: npm ci in $AID_PEER"
    (cd "$AID_PEER" && run_logged npm ci --no-audit --no-fund)
    echo "$want" >"$AID_PEER/node_modules/.lock.sha256"
  fi
  (cd "$AID_PEER" && node -e 'require("@thingweb/aas-aid")') || die "npm: @thingweb/aas-aid does not load"
}

# The benchmark's Node-RED baseline: exact versions from benches/node-red/package-lock.json.
install_bench() {
  install
  command -v npm >/dev/null || {
    say "apt: installing nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    run_logged apt-get update -qq
    run_logged apt-get install -y -qq --no-install-recommends nodejs npm
  }
  local dir=$PEERS_ROOT/benches/node-red want
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [[ -f $dir/node_modules/node-red/red.js && "$(cat "$dir/node_modules/.lock.sha256" 2>/dev/null)" == "$want" ]]; then
    say "npm: $dir up to date"
  else
    say "npm: installing Node-RED + node-red-contrib-opcua into $dir"
    (cd "$dir" && run_logged npm ci --no-audit --no-fund)
    echo "$want" >"$dir/node_modules/.lock.sha256"
  fi
}

free_ports() { # N distinct free TCP ports on 127.0.0.1
  python3 -c 'import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in ss))' "$1"
}

wait_until() { # NAME PID LOG CMD...: poll CMD for up to 15 s while PID lives
  local name=$1 pid=$2 log=$3 i; shift 3
  for ((i = 0; i < 150; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$log" >&2; stop; die "$name did not become ready"
}

vm_ready() { [[ "$(curl -fsS "http://127.0.0.1:$1/health")" == OK ]]; }

start() {
  local p; for p in mosquitto mosquitto_pub victoria-metrics curl python3; do
    command -v "$p" >/dev/null || die "$p not found (run .ci/peers.sh install)"
  done
  stop >/dev/null
  mkdir -p "$PEERS_DIR"
  local tmp mqtt_port vm_port ilp_tcp_port
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/aas-peers.XXXXXX")
  read -r mqtt_port vm_port ilp_tcp_port < <(free_ports 3)
  echo "PEERS_TMP=$tmp" >"$PEERS_DIR/env" # lets stop clean up even if start fails below

  # user root: as root mosquitto otherwise drops to user mosquitto and cannot read files in $tmp (mode 0700),
  # e.g. a password_file or TLS keys that a test adds
  cat >"$tmp/mosquitto.conf" <<EOF
user root
listener $mqtt_port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
max_inflight_messages 1000
log_dest stderr
EOF
  mosquitto -c "$tmp/mosquitto.conf" </dev/null >"$tmp/mosquitto.log" 2>&1 &
  echo $! >"$PEERS_DIR/mosquitto.pid"
  victoria-metrics -storageDataPath="$tmp/vm" -httpListenAddr="127.0.0.1:$vm_port" \
    -influxListenAddr="127.0.0.1:$ilp_tcp_port" -retentionPeriod=100y \
    -search.latencyOffset=0s -search.disableCache </dev/null >"$tmp/vm.log" 2>&1 &
  echo $! >"$PEERS_DIR/vm.pid"
  say "started mosquitto (pid $(cat "$PEERS_DIR/mosquitto.pid")) and victoria-metrics (pid $(cat "$PEERS_DIR/vm.pid")), logs in $tmp"

  wait_until mosquitto "$(cat "$PEERS_DIR/mosquitto.pid")" "$tmp/mosquitto.log" \
    mosquitto_pub -h 127.0.0.1 -p "$mqtt_port" -q 1 -t peers/ready -m ok
  wait_until victoria-metrics "$(cat "$PEERS_DIR/vm.pid")" "$tmp/vm.log" vm_ready "$vm_port"

  cat >"$PEERS_DIR/env" <<EOF
MQTT_HOST=127.0.0.1
MQTT_PORT=$mqtt_port
ILP_HTTP_URL=http://127.0.0.1:$vm_port
ILP_TCP_ADDR=127.0.0.1:$ilp_tcp_port
VM_URL=http://127.0.0.1:$vm_port
MOSQUITTO_PID=$(cat "$PEERS_DIR/mosquitto.pid")
VM_PID=$(cat "$PEERS_DIR/vm.pid")
PEERS_PIDS="$(cat "$PEERS_DIR/mosquitto.pid") $(cat "$PEERS_DIR/vm.pid")"
PEERS_TMP=$tmp
PEERS_PYTHON=$VENV/bin/python
EOF
  say "ready; $PEERS_DIR/env:"
  cat "$PEERS_DIR/env"
}

stop() {
  local f pid name i
  for f in mosquitto vm; do
    [[ -f $PEERS_DIR/$f.pid ]] || continue
    pid=$(cat "$PEERS_DIR/$f.pid"); name=$f; [[ $f == vm ]] && name=victoria-metric # comm is cut to 15 chars
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
      kill "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      say "stopped $f (pid $pid)"
    fi
    rm -f "$PEERS_DIR/$f.pid"
  done
  if [[ -f $PEERS_DIR/env ]]; then
    local tmp; tmp=$(sed -n 's/^PEERS_TMP=//p' "$PEERS_DIR/env")
    [[ $tmp == */aas-peers.* && -d $tmp ]] && rm -rf "$tmp"
    rm -f "$PEERS_DIR/env"
  fi
  return 0
}

case "${1:-}" in
  install | start | stop) "$1" ;;
  install-bench) install_bench ;;
  env) cat "$PEERS_DIR/env" ;;
  *) echo "usage: $0 install|install-bench|start|stop|env   (or: source $0 start|env)" >&2; exit 2 ;;
esac
