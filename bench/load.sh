#!/usr/bin/env bash
# The daemon (aovis-agent run, release build, shipped defaults: max_connections 256,
# client_timeout_secs 10) under load and under slow clients, on loopback:
#
#   1. wrk, 64 connections, on the IMDS credentials GET: req/s, p99, errors;
#   2. wrk, 1000 connections (4x the cap): what the cap does to the excess, and
#      that the requests it admits are still answered;
#   3. 200 slow clients (below the cap) trickling headers or sending nothing,
#      while wrk (16 connections) measures the service everyone else gets, then
#      how long the daemon let the slow ones live (target: about 10 s, or less
#      once new connections need their slots);
#   4. 400 slow clients (above the cap) while wrk measures again, and 50 new
#      connections try one request each: at the cap a new connection evicts the
#      oldest one with no request in flight, so new clients must still be served
#      (target: 50 of 50, wrk without errors) while the slow ones are pushed out
#      oldest first;
#   5. ROUNDS more rounds of 1 and 2, then the daemon's RSS after each phase and
#      round: it must stay flat (no growth per round once the allocator has its
#      working set; the last line compares first and last rounds).
#
# Usage: bench/load.sh [SECONDS] [ROUNDS]   (default 5 6)
# Needs wrk and curl (Debian packages of those names) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
rounds=${2:-6}

for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "bench: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
cargo build --release --locked -p aovis-agent >/dev/null 2>&1
bin=$PWD/target/release/aovis-agent
slow=$PWD/bench/load_slow_clients.py

work=$(mktemp -d)
chmod 0755 "$work"
daemon_pid=""
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)

mkdir -p "$work/state/profiles" "$work/config"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
expiry=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
cat > "$work/state/profiles/bench.json" <<JSON
{"Version":1,"AccessKeyId":"ASIABENCHMARK0000001","SecretAccessKey":"$(head -c 30 /dev/urandom | base64)","SessionToken":"$(head -c 600 /dev/urandom | base64 -w0)","Expiration":"$expiry","Aovis":{"serial":1,"role_arn":"arn:aws:iam::111122223333:role/bench","instance_id":"mi-0123456789abcdef0","issued_at":"$now","received_at":"$now"}}
JSON
chmod 0640 "$work/state/profiles/bench.json"
cat > "$work/config/agent.toml" <<TOML
[daemon.imds]
profile = "bench"
listen = ["127.0.0.1:$port"]
TOML

AOVIS_STATE_DIR=$work/state AOVIS_CONFIG_DIR=$work/config RUST_LOG=warn \
    "$bin" --config "$work/config/agent.toml" run 2>"$work/daemon.log" &
daemon_pid=$!
base=http://127.0.0.1:$port
for _ in $(seq 100); do
    curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' "$base/latest/api/token" >"$work/token" 2>/dev/null && break
    sleep 0.1
done
[ -s "$work/token" ] || { echo "bench: the daemon did not start:" >&2; cat "$work/daemon.log" >&2; exit 1; }
header="X-aws-ec2-metadata-token: $(cat "$work/token")"
url=$base/latest/meta-data/iam/security-credentials/bench

rss() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$daemon_pid/status"; }
rss_log=""
round_rss=""
note_rss() { rss_log="$rss_log $1=$(rss)"; }

# wrk's figures on one line: req/s, p50, p99, non-2xx, socket errors.
load() { # label connections seconds
    local out
    out=$(wrk -t2 -c"$2" -d"$3s" --timeout 5s --latency -H "$header" "$url" 2>&1)
    local rps p50 p99 non2xx errors
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    errors=$(awk -F'Socket errors: ' '/Socket errors/ {print $2}' <<<"$out")
    printf '%-34s %7s req/s  p50 %-8s p99 %-8s non-2xx %-5s socket errors: %s\n' \
        "$1" "$rps" "$p50" "$p99" "${non2xx:-0}" "${errors:-none}"
}

# New connections, one request each (what an SDK starting up does): how many of
# 50 are answered within 2 s.
fresh() { # label
    local ok
    ok=$(for _ in $(seq 50); do curl -s -o /dev/null -w '%{http_code}\n' -m 2 -H "$header" "$url" || true; done | grep -c '^200$' || true)
    printf '%-34s %s of 50 new connections answered 200\n' "$1" "$ok"
}

note_rss start
wrk -t2 -c16 -d2s -H "$header" "$url" >/dev/null
note_rss warm
echo "daemon: aovis-agent run (release), defaults max_connections=256 client_timeout_secs=10; wrk -t2, loopback, 2 cores shared"
load "1. 64 connections" 64 "$seconds"
note_rss after-64
load "2. 1000 connections (cap 256)" 1000 "$seconds"
note_rss after-1000

python3 "$slow" 127.0.0.1 "$port" 200 14 >"$work/slow-200.txt" &
slow_pid=$!
sleep 1
fresh "3. beside 200 slow ones:"
load "   and 16 wrk connections" 16 "$seconds"
note_rss with-200-slow
wait "$slow_pid"
echo "   $(cat "$work/slow-200.txt")"

python3 "$slow" 127.0.0.1 "$port" 400 14 >"$work/slow-400.txt" &
slow_pid=$!
sleep 1
fresh "4. beside 400 slow ones:"
load "   and 16 wrk connections" 16 "$seconds"
note_rss with-400-slow
wait "$slow_pid"
echo "   $(cat "$work/slow-400.txt")"
sleep 1
load "   after the slow clients left" 16 2

for round in $(seq "$rounds"); do
    load "5. round $round: 64 connections" 64 "$seconds" >/dev/null
    load "5. round $round: 1000 connections" 1000 "$seconds" >/dev/null
    note_rss "round-$round"
    round_rss="$round_rss $(rss)"
done
echo "RSS (MiB):$rss_log"
# Flat means no growth per round once the allocator has its working set: compare
# the first round with the last, and show the spread over the second half.
python3 -c '
import sys
r = [float(x) for x in sys.argv[1:]]
half = r[len(r) // 2:]
print(f"RSS over {len(r)} rounds: first {r[0]:.1f} MiB, last {r[-1]:.1f} MiB ({r[-1] - r[0]:+.1f}); "
      f"second half within {max(half) - min(half):.1f} MiB")
' $round_rss
peak=$(awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$daemon_pid/status")
echo "RSS peak (VmHWM): $peak MiB"
kill -0 "$daemon_pid" || { echo "bench: the daemon died" >&2; exit 1; }
if grep -qi "panic" "$work/daemon.log"; then echo "bench: the daemon logged a panic" >&2; exit 1; fi
