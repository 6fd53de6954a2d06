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

# Which of the fake API server's nginx workers serve kubegate's HTTP/2 connections
# (bench/upstream-workers.py): every 5 s, kubegate's own connections to it and the
# server's side of each, the last sample kept and read at the end.
workers_seen=$state/upstream-workers
(
  while kill -0 "$pid" 2>/dev/null; do
    { ss -tnpH state established "( dport = :$(port 16443) )" | grep "pid=$pid,"; } >"$workers_seen.mine.new" 2>/dev/null || true
    ss -tnpiH state established "( sport = :$(port 16443) )" >"$workers_seen.server.new" 2>/dev/null || true
    if grep -q bytes_received "$workers_seen.server.new"; then
      mv "$workers_seen.mine.new" "$workers_seen.mine"
      mv "$workers_seen.server.new" "$workers_seen.server"
    fi
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
rm -f "$workers_seen".*.new
if [[ -f $workers_seen.server ]]; then
  echo "kubegate's connections to the fake API server:" \
    "$("$repo/bench/upstream-workers.py" "$workers_seen.server" "$workers_seen.mine")"
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
