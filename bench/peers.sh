#!/usr/bin/env bash
# kubegate next to its peers (nginx, kubectl proxy, direct) in one run of
# ../shared/bench-peers (or $BENCH_PEERS), with kubegate in its default configuration:
# auth, policy and the file audit sink on, one worker per core, unpinned.
#
#   bench/peers.sh                       # the whole run (a few minutes once built)
#   bench/peers.sh -- --paths 1KiB --conns 32 --runs 1    # bench.py flags after --
#   WATCH_IDLE=8000 bench/peers.sh       # the many-watches figure; the other knobs of
#                                        # bench-peers' README pass through too
#   PORT_OFFSET=10000 BENCH_WORK=/tmp/b2 bench/peers.sh   # every port moved (kubegate's
#                                        # 9090, the fake API server's 16443...), so that
#                                        # two runs on one machine do not meet
#
# It builds kubegate (release), registers bench-peers' fake API server as cluster 1 of
# org 1 in a kubegate data folder of its own ($BENCH_WORK/kubegate), serves kubegate on
# 127.0.0.1:9090 with the embedded defaults, runs bench-peers with kubegate as the proxy
# under test, stops kubegate, prints which of the fake API server's nginx workers served
# kubegate's busy HTTP/2 connections, and then checks that the audit trail holds at least
# one event for every request oha counted (warm-up requests and watches come on top).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
peers=${BENCH_PEERS:-$repo/../shared/bench-peers}
[[ -x $peers/run.sh ]] || { echo "bench/peers.sh: no bench-peers at $peers (set BENCH_PEERS)" >&2; exit 2; }
peers=$(cd "$peers" && pwd)
export BENCH_WORK=${BENCH_WORK:-/tmp/kubegate-bench-peers}
offset=${PORT_OFFSET:-0}
port() { echo $(($1 + offset)); }
ports=(--upstream-port "$(port 16443)" --watch-port "$(port 16480)" --kubectl-port "$(port 18001)"
  --nginx-port "$(port 18002)" --haproxy-port "$(port 18003)")
mkdir -p "$BENCH_WORK"
chmod o+x "$BENCH_WORK"

cargo build --release --locked --manifest-path "$repo/Cargo.toml" --bin kubegate
kubegate=$repo/target/release/kubegate

# the fake API server's certificates (kept across runs) and a kubeconfig with them
# embedded, as bench.py writes it when it starts
"$peers/gen-certs.sh" "$BENCH_WORK/certs" >/dev/null
b64() { base64 -w0 "$BENCH_WORK/certs/$1"; }
kubeconfig=$BENCH_WORK/kubeconfig.kubegate
cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster:
    server: https://127.0.0.1:$(port 16443)
    certificate-authority-data: $(b64 ca.crt)
users:
- name: bench-admin
  user:
    client-certificate-data: $(b64 client.crt)
    client-key-data: $(b64 client.key)
contexts:
- name: bench
  context: {cluster: bench, user: bench-admin}
current-context: bench
EOF

# a fresh kubegate data folder: embedded defaults, cluster 1 of org 1, alice its admin
state=$BENCH_WORK/kubegate
rm -rf "$state"
mkdir -p "$state"
cd "$state"
"$kubegate" cluster add --org 1 --name bench --kubeconfig "$kubeconfig" >/dev/null
"$kubegate" member add --org 1 --user alice --role admin >/dev/null
token=$("$kubegate" token create --user alice)

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RUST_LOG=${RUST_LOG:-info} "$kubegate" serve --listen "127.0.0.1:$(port 9090)" >"$state/kubegate.log" 2>&1 &
pid=$!
stop() { kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; }
trap stop EXIT
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$(port 9090)/healthz" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$state/kubegate.log" >&2; exit 1; }
  sleep 0.1
done

# Which of the fake API server's nginx workers serve kubegate's HTTP/2 connections (with
# kubegate alone at 1 KiB and 128 connections, the fast runs were those where one worker
# served both; README, Benchmarks): every 5 s, kubegate's own ports towards it and the
# server's side of each connection (its worker, the bytes it received), the last sample
# kept, printed at the end.
workers_seen=$state/upstream-workers.txt
(
  while kill -0 "$pid" 2>/dev/null; do
    {
      ss -tnpH state established "( dport = :$(port 16443) )" | grep "pid=$pid," || true
      echo ---
      ss -tnpiH state established "( sport = :$(port 16443) )" || true
    } >"$workers_seen.new" 2>/dev/null
    if grep -q bytes_received "$workers_seen.new"; then mv "$workers_seen.new" "$workers_seen"; fi
    sleep 5
  done
) &
sampler=$!

start=$(date +%s)
[[ $# -gt 0 && $1 == -- ]] && shift
TARGET_NAME=kubegate TARGET_PID=$pid "$peers/run.sh" \
  "http://127.0.0.1:$(port 9090)/pipeline/api/v1/orgs/1/clusters/1/proxy" "$token" -- "${ports[@]}" "$@"
stop
trap - EXIT
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
if [[ -f $workers_seen ]]; then
  python3 - "$workers_seen" <<'EOF'
import re, sys
mine, theirs = open(sys.argv[1]).read().split("---\n", 1)
# kubegate's side: its local ports towards the fake API server
ports = {m.group(1) for m in re.finditer(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:\d+\s+users:", mine)}
# the server's side, two lines a connection: addresses and process, then counters
lines = theirs.split("\n")
busy = []
for head, info in zip(lines[0::2], lines[1::2]):
    peer = re.search(r"127\.0\.0\.1:\d+\s+127\.0\.0\.1:(\d+)", head)
    pid, got = re.search(r"pid=(\d+)", head), re.search(r"bytes_received:(\d+)", info)
    if peer and pid and got and peer.group(1) in ports and int(got.group(1)) > 1_000_000:
        busy.append(pid.group(1))
workers = sorted(set(busy))
print(f"kubegate's busy connections to the fake API server ({len(busy)}, each sent it more"
      f" than 1 MB) were served by nginx worker(s) {', '.join(workers) or 'none'}"
      + (": one for all (with kubegate alone, the fast runs at 128 connections)" if len(busy) > 1 and len(workers) == 1 else ""))
EOF
fi
echo "bench/peers.sh: the run took $(($(date +%s) - start)) s; kubegate's log: $state/kubegate.log"

# every request oha counted is an event of the trail
results=$(ls -td "$BENCH_WORK"/results/*/ | head -1)
python3 - "$results/results.json" "$state/data" <<'EOF'
import glob, gzip, json, sys
runs = json.load(open(sys.argv[1]))["runs"]
counted = sum(r["ok"] + r["non2xx"] for r in runs if r["target"] == "kubegate")
events = 0
for name in glob.glob(sys.argv[2] + "/audit.jsonl*"):
    # rotated files are gzip-compressed in the background
    with (gzip.open if name.endswith(".gz") else open)(name, "rb") as f:
        events += sum(1 for line in f if line.strip())
print(f"audit trail: {events} events; oha counted {counted} requests to kubegate")
if events < counted:
    sys.exit(f"bench/peers.sh: {counted - events} requests oha counted have no audit event")
EOF
