#!/usr/bin/env bash
# kubegate alone in front of bench-peers' fake API server, one or more binaries run in
# turn: a tuning aid for comparing a change with what came before it on a noisy machine
# (the figures of issue 13's goals come from bench/peers.sh, next to the peers).
#
#   bench/alone.sh [-p 1KiB|1MiB|objects] [-c CONNS] [-n ROUNDS] [-d SECS] [-w] [BINARY|nginx...]
#   bench/alone.sh -p 1MiB -n 4 /tmp/kg-before target/release/kubegate
#   bench/alone.sh -n 3 nginx target/release/kubegate   # next to bench-peers' nginx
#   bench/alone.sh -c 128 -n 6 -w    # which of the fake API server's workers served
#                                    # kubegate's busy connections in each run
#
# Each round serves each binary in turn, in its default configuration (one worker per
# core, auth, policy, the file audit sink), warms it up for 2 s, loads it for SECS with
# oha, and prints its req/s, its CPU time per request (from /proc/PID/stat) and oha's
# p50/p99. Binaries default to target/release/kubegate; `nginx` stands for bench-peers'
# nginx reverse proxy (127.0.0.1:18002, started with the fake API server), measured the
# same way. Each row also splits the CPU time spent per request between oha, the proxy
# and the fake API server's nginx workers: on two shared cores, the rate is what the three
# together leave room for. With -w it also prints, for each run, the fake API server's
# nginx worker (pid) behind each of kubegate's connections that sent it more than 1 MB,
# read with `ss` halfway through the load: at 1 KiB and 128
# connections, the runs where kubegate's two busy HTTP/2 connections share one worker are
# the fast ones (README, Benchmarks). The fake API server is the one of
# `../shared/bench-peers/run.sh --serve` on 127.0.0.1:16443; it is started here (and
# stopped at the end) when nothing listens there.
#
# `-p objects` gets a different object each time (`.../pods/p` and 7 random digits, oha's
# --rand-regex-url): the fake API server has no such pod and answers each with
# kube-apiserver's 404 `Status` (about 200 bytes), which is then the expected answer.
# It measures requests to paths the proxy has not seen before.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
peers=$(cd "${BENCH_PEERS:-$repo/../shared/bench-peers}" && pwd)
export BENCH_WORK=${BENCH_WORK:-/tmp/kubegate-bench-peers}
mkdir -p "$BENCH_WORK"
path=1KiB conns=32 rounds=3 secs=5 port=9190 workers=0
while getopts p:c:n:d:w opt; do
  case $opt in
    p) path=$OPTARG ;;
    c) conns=$OPTARG ;;
    n) rounds=$OPTARG ;;
    d) secs=$OPTARG ;;
    w) workers=1 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
binaries=("$@")
[[ ${#binaries[@]} -gt 0 ]] || binaries=("$repo/target/release/kubegate")
expected=2 random=()
case $path in
  1KiB) upstream_path=/api/v1/namespaces/default/pods ;;
  1MiB) upstream_path=/api/v1/namespaces/big/pods ;;
  objects) upstream_path='/api/v1/namespaces/default/pods/p[0-9]{7}' expected=404 random=(--rand-regex-url) ;;
  *) echo "bench/alone.sh: -p is 1KiB, 1MiB or objects" >&2; exit 2 ;;
esac
oha=$(command -v oha || echo ~/.cargo/bin/oha)
[[ -x $oha ]] || { echo "bench/alone.sh: no oha (cargo install oha --locked)" >&2; exit 2; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
if ! (exec 3<>/dev/tcp/127.0.0.1/16443) 2>/dev/null; then
  BENCH_INSTALL=0 setsid "$peers/run.sh" --serve >"$BENCH_WORK/serve.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do
    (exec 3<>/dev/tcp/127.0.0.1/16443) 2>/dev/null && break
    sleep 0.1
  done
  sleep 1
fi
kubeconfig=$BENCH_WORK/kubeconfig.embedded
[[ -f $kubeconfig ]] || { echo "bench/alone.sh: no $kubeconfig (see $BENCH_WORK/serve.log)" >&2; exit 1; }

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
tick=$(getconf CLK_TCK)
# the CPU ticks (user + system) of the processes $@, summed
cpu_ticks() {
  local total=0 p
  for p in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$total"
}
# the fake API server's nginx workers (their master runs upstream.nginx.conf)
api_workers=$(pgrep -P "$(pgrep -f 'upstream[.]nginx[.]conf' | head -1)" | tr '\n' ' ')
[[ -n $api_workers ]] || { echo "bench/alone.sh: the fake API server's nginx workers not found" >&2; exit 1; }
oha_cpu=$BENCH_WORK/alone-oha-cpu
# oha for $1 against the proxy being served ($token and $url are its own); oha's CPU
# time in seconds goes to $oha_cpu
load() {
  python3 -c '
import resource, subprocess, sys
subprocess.run(sys.argv[2:], check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(str(r.ru_utime + r.ru_stime))' "$oha_cpu" \
    "$oha" -z "$1" -c "$conns" --no-tui --output-format json --http-version 1.1 \
    "${random[@]}" -H "Authorization: Bearer $token" "$url"
}
printf '%-40s %6s %10s %12s %9s %9s   %s\n' binary round req/s 'CPU us/req' 'p50 ms' 'p99 ms' \
  'us/req: oha + proxy + API server = machine'
for round in $(seq "$rounds"); do
  for i in "${!binaries[@]}"; do
    state=$BENCH_WORK/alone/$i
    rm -rf "$state"
    mkdir -p "$state"
    pid=""
    if [[ ${binaries[$i]} = nginx ]]; then
      # bench-peers' nginx reverse proxy: no token; its workers' CPU
      token=none
      url=http://127.0.0.1:18002$upstream_path
      proxy_pids=$(pgrep -P "$(pgrep -f 'proxy[.]nginx[.]conf' | head -1)" | tr '\n' ' ')
      [[ -n $proxy_pids ]] || { echo "bench/alone.sh: bench-peers' nginx is not running" >&2; exit 1; }
    else
      bin=$(realpath "${binaries[$i]}")
      (
        cd "$state"
        "$bin" cluster add --org 1 --name bench --kubeconfig "$kubeconfig"
        "$bin" member add --org 1 --user alice --role admin
        "$bin" token create --user alice >token
      ) >"$state/setup.log" 2>&1 || { cat "$state/setup.log" >&2; exit 1; }
      token=$(cat "$state/token")
      (cd "$state" && RUST_LOG=${RUST_LOG:-info} exec "$bin" serve --listen "127.0.0.1:$port" >kubegate.log 2>&1) &
      pid=$!
      proxy_pids=$pid
      for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
        sleep 0.1
      done
      url=http://127.0.0.1:$port/pipeline/api/v1/orgs/1/clusters/1/proxy$upstream_path
    fi
    load 2s >/dev/null
    # shellcheck disable=SC2086 # lists of pids
    before=$(cpu_ticks $proxy_pids) api_before=$(cpu_ticks $api_workers)
    if [[ $workers = 1 ]]; then
      load "${secs}s" >"$state/oha.json" &
      loader=$!
      sleep "$(awk -v s="$secs" 'BEGIN { print s / 2 }')"
      # the fake API server's side of each connection: its worker and the bytes it received
      ss -tnpiH state established '( sport = :16443 )' >"$state/ss.txt"
      wait "$loader"
    else
      load "${secs}s" >"$state/oha.json"
    fi
    # shellcheck disable=SC2086
    after=$(cpu_ticks $proxy_pids) api_after=$(cpu_ticks $api_workers)
    if [[ -n $pid ]]; then
      kill "$pid"
      wait "$pid" 2>/dev/null || true
    fi
    busy=""
    [[ $workers = 1 ]] && busy="  $("$repo/bench/upstream-workers.py" "$state/ss.txt")"
    python3 - "$state/oha.json" "$((after - before))" "$tick" "${binaries[$i]}" "$round" "$busy" \
      "$((api_after - api_before))" "$(cat "$oha_cpu")" "$expected" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
ticks, tick, name, rnd, busy = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
api_ticks, oha_seconds, expected = int(sys.argv[7]), float(sys.argv[8]), sys.argv[9]
codes = j.get("statusCodeDistribution") or {}
ok = sum(v for k, v in codes.items() if str(k).startswith(expected))
if ok == 0 or sum(codes.values()) != ok:
    sys.exit(f"bench/alone.sh: {name}: answers {codes}")
pct = j.get("latencyPercentiles", {})
proxy, api, oha = ticks / tick / ok * 1e6, api_ticks / tick / ok * 1e6, oha_seconds / ok * 1e6
print(f"{name[-40:]:<40} {rnd:>6} {ok / j['summary']['total']:>10,.0f} {proxy:>12,.1f}"
      f" {pct['p50'] * 1000:>9.2f} {pct['p99'] * 1000:>9.2f}"
      f"   {oha:,.1f} + {proxy:,.1f} + {api:,.1f} = {oha + proxy + api:,.1f}{busy}")
EOF
  done
done
