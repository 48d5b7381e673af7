#!/usr/bin/env bash
# A real multi-node Ray cluster on one machine, for development and the multi-node test.
#
#   cluster/local.sh up [--workers N] [--worker-cpus C]   # head + N workers (default 1 worker, 2 CPUs)
#   cluster/local.sh status
#   cluster/local.sh exec I CMD...   # run CMD on node I (0 = head), e.g. to reach a service bound to its 127.0.0.1
#   cluster/local.sh kill-node I     # kill -9 every process of node I (I >= 1): a worker machine lost
#   cluster/local.sh add-worker I [--worker-cpus C]   # start worker I (new, or in place of a killed one)
#   cluster/local.sh down
#
# Each node is its own `ray start`. As root, each runs in its own network namespace ("host") with
# its own IP on a private bridge, the faithful stand-in for separate machines. Otherwise the nodes
# share 127.0.0.1 (still separate raylets). Like the KubeRay manifests, the head has num-cpus 0, so
# Serve replicas and scoring actors can only run on workers.
#
# `up` writes $STATE/cluster.env (`source` it: RAY_ADDRESS for `ray job submit`, RAY_DASHBOARD_ADDRESS for `serve deploy`,
# GCS_ADDRESS, HEAD_IP, SERVE_URL, and the token-auth settings every Ray CLI call needs). The
# cluster uses token auth with its own token ($STATE/auth_token), as Ray 2.60 recommends.
# Env: RAY (ray binary; default .venv/bin/ray or `ray` on PATH), RMCLUSTER_LOCAL_STATE (default
# /tmp/rmcluster-local), RMCLUSTER_LOCAL_SUBNET (default 10.213.77), RMCLUSTER_LOCAL_NAME (default rmc),
# RMCLUSTER_LOCAL_GCS_PORT / RMCLUSTER_LOCAL_DASHBOARD_PORT (default 6379 / 8265).
set -euo pipefail

STATE=${RMCLUSTER_LOCAL_STATE:-/tmp/rmcluster-local}
SUBNET=${RMCLUSTER_LOCAL_SUBNET:-10.213.77}
NAME=${RMCLUSTER_LOCAL_NAME:-rmc}  # prefix of the bridge, namespaces and veths (so two clusters can coexist)
BRIDGE=${NAME}br0
NS_PREFIX=${NAME}-node
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z "${RAY:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/ray" ]]; then RAY="$ROOT/.venv/bin/ray"; else RAY=$(command -v ray); fi
fi
# Job entrypoints run `python` from the node's PATH: make it the interpreter that has ray and rmcluster.
export PATH="$(dirname "$RAY"):$PATH"
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

log() { echo "[local.sh] $*" >&2; }

can_netns() {
  [[ $(id -u) -eq 0 ]] && command -v ip >/dev/null || return 1
  ip netns add "${NS_PREFIX}-probe" 2>/dev/null || return 1
  ip netns del "${NS_PREFIX}-probe"
}

# run_on NODE_INDEX CMD...: run a command "on" node i (inside its namespace in netns mode).
run_on() {
  local i=$1; shift
  if [[ $(cat "$STATE/mode") == netns ]]; then ip netns exec "${NS_PREFIX}$i" "$@"; else "$@"; fi
}

make_host() {  # make_host I IP: namespace + veth into the bridge
  local i=$1 ip=$2 ns="${NS_PREFIX}$1" veth="${NAME}-veth$1"
  ip netns add "$ns"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$BRIDGE" up
  ip netns exec "$ns" ip addr add "$ip/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link set lo up
}

node_ip() {  # the IP of node i (0 = head)
  if [[ $(cat "$STATE/mode") == netns ]]; then echo "$SUBNET.$(( $1 + 2 ))"; else echo 127.0.0.1; fi
}

cmd_up() {
  local workers=1 worker_cpus=2
  while [[ $# -gt 0 ]]; do
    case $1 in
      --workers) workers=$2; shift 2 ;;
      --worker-cpus) worker_cpus=$2; shift 2 ;;
      *) log "unknown option $1"; exit 2 ;;
    esac
  done
  if [[ -f "$STATE/cluster.env" ]]; then log "already up (see $STATE/cluster.env); run down first"; exit 1; fi
  mkdir -p "$STATE"
  # Token auth with a token of our own: deterministic whether or not ~/.ray/auth_token exists.
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/auth_token"
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$STATE/auth_token"
  if can_netns; then
    echo netns >"$STATE/mode"
    ip link add "$BRIDGE" type bridge
    ip addr add "$SUBNET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    for i in $(seq 0 "$workers"); do make_host "$i" "$(node_ip "$i")"; done
  else
    echo loopback >"$STATE/mode"
    log "no network namespaces here (needs root and iproute2): nodes share 127.0.0.1"
  fi
  local head_ip; head_ip=$(node_ip 0)
  local port=${RMCLUSTER_LOCAL_GCS_PORT:-6379} dash=${RMCLUSTER_LOCAL_DASHBOARD_PORT:-8265}
  log "head at $head_ip ($(cat "$STATE/mode"))"
  run_on 0 "$RAY" start --head --node-ip-address="$head_ip" --port="$port" --dashboard-host=0.0.0.0 \
    --dashboard-port="$dash" --num-cpus=0 --temp-dir="$STATE/ray" --disable-usage-stats >"$STATE/head.log" 2>&1 \
    || { cat "$STATE/head.log" >&2; exit 1; }
  cat >"$STATE/cluster.env" <<EOF
export RAY_ADDRESS=http://$head_ip:$dash
export RAY_DASHBOARD_ADDRESS=http://$head_ip:$dash
export GCS_ADDRESS=$head_ip:$port
export HEAD_IP=$head_ip
export SERVE_URL=http://$head_ip:8000
export WORKERS=$workers
export RAY_AUTH_MODE=token
export RAY_AUTH_TOKEN_PATH=$STATE/auth_token
EOF
  for i in $(seq 1 "$workers"); do start_worker "$i" "$worker_cpus"; done
  wait_for_nodes $(( workers + 1 ))
  cat "$STATE/cluster.env"
}

env_value() { grep "^export $1=" "$STATE/cluster.env" | cut -d= -f2-; }

wait_for_nodes() {
  local want=$1 gcs; gcs=$(env_value GCS_ADDRESS)
  for _ in $(seq 1 60); do
    if [[ $("$RAY" status --address="$gcs" 2>/dev/null | grep -c ' node_') -ge $want ]]; then return 0; fi
    sleep 2
  done
  log "only $("$RAY" status --address="$gcs" 2>/dev/null | grep -c ' node_') of $want nodes joined"; exit 1
}

start_worker() {  # start_worker I CPUS
  local i=$1 cpus=$2 head_ip port
  head_ip=$(env_value HEAD_IP); port=$(env_value GCS_ADDRESS | cut -d: -f2)
  log "worker $i at $(node_ip "$i")"
  # Each node gets its own temp dir, as separate machines have: nodes sharing one would race
  # unpacking and garbage-collecting runtime-env packages (working_dir) in the same place.
  run_on "$i" "$RAY" start --address="$head_ip:$port" --node-ip-address="$(node_ip "$i")" \
    --num-cpus="$cpus" --resources="{\"rmc_worker_$i\": 1}" --temp-dir="$STATE/ray$i" --disable-usage-stats \
    >"$STATE/worker$i.log" 2>&1 || { cat "$STATE/worker$i.log" >&2; exit 1; }
}

cmd_kill_node() {
  local i=$1
  [[ $i -ge 1 ]] || { log "kill-node: node 0 is the head; give a worker's index"; exit 2; }
  if [[ $(cat "$STATE/mode") == netns ]]; then
    pids=$(ip netns pids "${NS_PREFIX}$i" || true)
    [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null || true
  else  # loopback: the node's processes name its temp dir
    pkill -9 -f -- "$STATE/ray$i( |/|$)" || true
  fi
  log "node $i killed"
}

cmd_add_worker() {
  local i=$1 cpus=2; shift
  [[ ${1:-} == --worker-cpus ]] && cpus=$2
  export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$STATE/auth_token"
  if [[ $(cat "$STATE/mode") == netns ]] && ! ip netns list | grep -q "^${NS_PREFIX}$i\b"; then
    make_host "$i" "$(node_ip "$i")"
  fi
  rm -rf "$STATE/ray$i"  # a killed node's sockets and session: a new machine starts clean
  start_worker "$i" "$cpus"
}

cmd_status() {
  [[ -f "$STATE/cluster.env" ]] || { log "not up"; exit 1; }
  cat "$STATE/cluster.env"
  RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$STATE/auth_token" "$RAY" status --address="$(env_value GCS_ADDRESS)"
}

cmd_down() {
  [[ -f "$STATE/mode" ]] || { log "not up"; return 0; }
  if [[ $(cat "$STATE/mode") == netns ]]; then
    # Kill exactly the processes inside our namespaces; `ray stop` would kill every Ray on the machine.
    for ns in $(ip netns list | awk '{print $1}' | grep "^${NS_PREFIX}[0-9]" || true); do
      pids=$(ip netns pids "$ns" || true)
      [[ -n "$pids" ]] && kill -9 $pids 2>/dev/null || true
      ip netns del "$ns" || true
    done
    for veth in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^${NAME}-veth" || true); do
      ip link del "$veth" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
  else
    # Loopback: every process of ours has our temp dir on its command line.
    pkill -9 -f "$STATE/ray" || true
  fi
  rm -rf "$STATE"
  log "down"
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  status) cmd_status ;;
  exec) shift; [[ -f "$STATE/mode" ]] || { log "not up"; exit 1; }; node=$1; shift; run_on "$node" "$@" ;;
  kill-node) shift; cmd_kill_node "$1" ;;
  add-worker) shift; cmd_add_worker "$@" ;;
  down) cmd_down ;;
  *) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 2 ;;  # the header comment is the usage
esac
