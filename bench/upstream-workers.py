#!/usr/bin/env python3
"""Which of the fake API server's nginx workers serve kubegate's busy connections.

    bench/upstream-workers.py SERVER_SIDE [KUBEGATE_SIDE]

SERVER_SIDE is `ss -tnpiH state established '( sport = :PORT )'` taken on the fake API
server's port: two lines a connection, its addresses and process, then its counters.
KUBEGATE_SIDE, when given, is `ss -tnpH` of kubegate's own connections to that port, and
only those count (other proxies share the server). A connection is busy when it sent the
server more than 1 MB. Prints one line: the worker (pid) behind each busy connection.
With kubegate alone at 1 KiB and 128 connections, the fast runs were those where one
worker served both of its HTTP/2 connections (README, Benchmarks).
"""
import re
import sys

lines = open(sys.argv[1]).read().split("\n")
ports = None
if len(sys.argv) > 2:
    # kubegate's local ports towards the server
    ports = {m.group(1) for m in re.finditer(
        r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:\d+\s+users:", open(sys.argv[2]).read())}
busy = []
for head, info in zip(lines[0::2], lines[1::2]):
    peer = re.search(r"127\.0\.0\.1:\d+\s+127\.0\.0\.1:(\d+)", head)
    pid, got = re.search(r"pid=(\d+)", head), re.search(r"bytes_received:(\d+)", info)
    if not (peer and pid and got) or int(got.group(1)) <= 1_000_000:
        continue
    if ports is None or peer.group(1) in ports:
        busy.append(pid.group(1))
one = " (one worker for all)" if len(busy) > 1 and len(set(busy)) == 1 else ""
print(f"busy connections by worker: {', '.join(sorted(busy)) or 'none'}{one}")
