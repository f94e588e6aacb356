#!/usr/bin/env bash
# The daemon's IMDS credentials GET against nginx serving the same JSON as a static
# file, in one run, with the same wrk threads and connections on loopback.
#
# Prints, for each server, requests/s and p99 latency (mean of ROUNDS interleaved
# rounds, so drift hits both alike), the ratio daemon/nginx (target >= 0.7x), the
# daemon's p99 (target < 5 ms) and its RSS after the run (VmRSS and the peak VmHWM
# from /proc; target < 16 MiB). Release build.
#
# Usage: bench/imds.sh [SECONDS_PER_ROUND] [CONNECTIONS] [ROUNDS]   (default 10 32 2)
# Needs wrk, nginx and curl (Debian packages of those names).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-32}
rounds=${3:-2}
threads=2

for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "bench: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
cargo build --release --locked -p aovis-agent >/dev/null 2>&1
bin=$PWD/target/release/aovis-agent

work=$(mktemp -d)
chmod 0755 "$work"
daemon_pid=""
nginx_pid=""
cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
imds_port=$(free_port)
nginx_port=$(free_port)

# A cache shaped like a real one: a 40-character secret, a session token of the
# length STS issues (several hundred characters).
mkdir -p "$work/state/profiles" "$work/config" "$work/www"
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
expiry=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
secret=$(head -c 30 /dev/urandom | base64)
token=$(head -c 600 /dev/urandom | base64 -w0)
cat > "$work/state/profiles/bench.json" <<JSON
{"Version":1,"AccessKeyId":"ASIABENCHMARK0000001","SecretAccessKey":"$secret","SessionToken":"$token","Expiration":"$expiry","Aovis":{"serial":1,"role_arn":"arn:aws:iam::111122223333:role/bench","instance_id":"mi-0123456789abcdef0","issued_at":"$now","received_at":"$now"}}
JSON
chmod 0640 "$work/state/profiles/bench.json"
cat > "$work/config/agent.toml" <<TOML
[daemon]
max_connections = 1024

[daemon.imds]
profile = "bench"
listen = ["127.0.0.1:$imds_port"]
TOML

AOVIS_STATE_DIR=$work/state AOVIS_CONFIG_DIR=$work/config RUST_LOG=warn \
    "$bin" --config "$work/config/agent.toml" run 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do
    curl -sf -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600' \
        "http://127.0.0.1:$imds_port/latest/api/token" >"$work/imds-token" 2>/dev/null && break
    sleep 0.1
done
[ -s "$work/imds-token" ] || { echo "bench: the daemon did not start:" >&2; cat "$work/daemon.log" >&2; exit 1; }
imds_token=$(cat "$work/imds-token")
path=/latest/meta-data/iam/security-credentials/bench
imds_url="http://127.0.0.1:$imds_port$path"

# nginx serves the very bytes the daemon answers with.
mkdir -p "$work/www$(dirname "$path")"
curl -sf -H "X-aws-ec2-metadata-token: $imds_token" "$imds_url" >"$work/www$path"
chmod -R a+rX "$work/www"
cat > "$work/nginx.conf" <<NGINX
daemon off;
user root root;
worker_processes $threads;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/www;
    }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
nginx_url="http://127.0.0.1:$nginx_port$path"
for _ in $(seq 100); do curl -sf "$nginx_url" >/dev/null 2>&1 && break; sleep 0.1; done
cmp -s <(curl -sf "$nginx_url") <(curl -sf -H "X-aws-ec2-metadata-token: $imds_token" "$imds_url") \
    || { echo "bench: nginx and the daemon do not serve the same bytes" >&2; exit 1; }

run_wrk() { # name url [header]
    local name=$1 url=$2 out
    shift 2
    out=$(wrk -t"$threads" -c"$connections" -d"${seconds}s" --latency "$@" "$url")
    echo "$out" >>"$work/wrk-$name.txt"
    local rps p99
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    echo "$rps $p99" >>"$work/rounds-$name.txt"
    local non2xx
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    [ -z "$non2xx" ] || { echo "bench: $name answered $non2xx non-2xx responses" >&2; exit 1; }
}

# Warm both up, then interleave the measured rounds.
wrk -t"$threads" -c"$connections" -d2s "$nginx_url" >/dev/null
wrk -t"$threads" -c"$connections" -d2s -H "X-aws-ec2-metadata-token: $imds_token" "$imds_url" >/dev/null
for _ in $(seq "$rounds"); do
    run_wrk nginx "$nginx_url"
    run_wrk daemon "$imds_url" -H "X-aws-ec2-metadata-token: $imds_token"
done

rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$daemon_pid/status")
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$daemon_pid/status")
size=$(stat -c %s "$bin")

python3 - "$work" "$rss" "$hwm" "$size" "$threads" "$connections" "$seconds" "$rounds" <<'PY'
import sys
work, rss, hwm, size, threads, connections, seconds, rounds = sys.argv[1:]
def ms(text):
    for unit, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(text)
def load(name):
    rows = [line.split() for line in open(f"{work}/rounds-{name}.txt")]
    rps = [float(r[0]) for r in rows]
    p99 = [ms(r[1]) for r in rows]
    return sum(rps) / len(rps), max(p99), rps, p99
nginx_rps, nginx_p99, nginx_all, nginx_p99s = load("nginx")
daemon_rps, daemon_p99, daemon_all, daemon_p99s = load("daemon")
p99s = lambda values: ", ".join(f"{v:.2f}" for v in values)
print(f"wrk:            {threads} threads, {connections} connections, {rounds} x {seconds} s per server, interleaved, loopback")
print(f"nginx:          {nginx_rps:10.0f} req/s  (rounds {', '.join(f'{r:.0f}' for r in nginx_all)})  p99 per round {p99s(nginx_p99s)} ms")
print(f"aovis-agent:    {daemon_rps:10.0f} req/s  (rounds {', '.join(f'{r:.0f}' for r in daemon_all)})  p99 per round {p99s(daemon_p99s)} ms")
print(f"ratio:          {daemon_rps / nginx_rps:.2f}x nginx   (target >= 0.7x)")
print(f"daemon p99:     {daemon_p99:.2f} ms worst round, nginx {nginx_p99:.2f} ms   (target < 5 ms)")
print(f"daemon RSS:     {int(rss) / 1024:.1f} MiB now, peak {int(hwm) / 1024:.1f} MiB   (target < 16 MiB)")
print(f"binary size:    {int(size) / 1048576:.1f} MiB (whole aovis-agent, release)")
PY
