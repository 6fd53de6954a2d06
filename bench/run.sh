#!/usr/bin/env bash
# Builds and runs the proxy benchmark (bench/proxy.rs), and keeps what it printed in
# bench/out/latest.txt. It stops by itself (in well under a minute once built).
set -euo pipefail
cd "$(dirname "$0")/.."

# 1,000 watches through a proxy take about 2,000 descriptors in this process (its client
# sockets and the stand-in's) and as many in the proxy.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then
    hard=65536
fi
ulimit -n "$hard"
if [ "$hard" -lt 8192 ]; then
    echo "bench/run.sh: needs 8192 open files, the hard limit is $hard" >&2
    exit 1
fi

cargo bench --bench proxy --no-run
mkdir -p bench/out
start=$(date +%s)
cargo bench --bench proxy 2>&1 | tee bench/out/latest.txt
echo "bench/run.sh: the run took $(($(date +%s) - start)) s" | tee -a bench/out/latest.txt
