#!/usr/bin/env bash
# aovis-cred read by 8 processes at once while aovis-agent receive replaces the
# cache back to back: every read must succeed (the cache is replaced by rename, so a
# reader sees the old file or the new one, never a torn or missing one).
#
# Prints the number of deliveries and reads, the failed reads (target: 0), and the
# readers' latency (p50/p99 of one aovis-cred run) with deliveries landing against
# the same readers with no delivery in the same run, and their ratio. Release build.
#
# Usage: bench/readers.sh [DELIVERIES] [READERS]   (default 400 8)
# Needs age (Debian package `age`) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
deliveries=${1:-400}
readers=${2:-8}

command -v age >/dev/null || { echo "bench: needs age (apt-get install age)" >&2; exit 1; }
cargo build --release --locked -p aovis-agent -p aovis-cred >/dev/null 2>&1
agent=$PWD/target/release/aovis-agent
cred=$PWD/target/release/aovis-cred

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
export AOVIS_STATE_DIR=$work/state AOVIS_CONFIG_DIR=$work/config
export AWS_SSM_INSTANCE_ID=mi-0123456789abcdef0 AOVIS_SSM_REGISTRATION_FILE=$work/none
mkdir -p -m 0755 "$work/state/profiles" "$work/config" "$work/payloads"
recipient=$("$agent" enroll)

# Seal every delivery up front (as the rotator would), so the measured loop is
# only receive and the readers.
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
expiry=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
token=$(head -c 600 /dev/urandom | base64 -w0)
for serial in $(seq 1 "$deliveries"); do
    secret=$(head -c 30 /dev/urandom | base64)
    printf '{"v":1,"instance_id":"%s","profile":"bench","serial":%d,"issued_at":"%s","role_arn":"arn:aws:iam::111122223333:role/bench","credentials":{"AccessKeyId":"ASIABENCHMARK%07d","SecretAccessKey":"%s","SessionToken":"%s","Expiration":"%s"}}' \
        "$AWS_SSM_INSTANCE_ID" "$serial" "$now" "$serial" "$secret" "$token" "$expiry" \
        | age -r "$recipient" | base64 -w0 >"$work/payloads/$serial"
done
"$agent" receive --payload "$(cat "$work/payloads/1")" >/dev/null

python3 - "$agent" "$cred" "$work" "$deliveries" "$readers" <<'PY'
import subprocess, sys, threading, time, statistics

agent, cred, work, deliveries, readers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

def read_loop(stop, latencies, failures):
    while not stop.is_set():
        started = time.perf_counter()
        out = subprocess.run([cred, "--profile", "bench"], capture_output=True, stdin=subprocess.DEVNULL)
        latencies.append(time.perf_counter() - started)
        if out.returncode != 0 or b'"SecretAccessKey"' not in out.stdout:
            failures.append(out.stderr.decode(errors="replace").strip())

def with_readers(body):
    stop = threading.Event()
    latencies, failures = [], []
    threads = [threading.Thread(target=read_loop, args=(stop, latencies, failures)) for _ in range(readers)]
    for t in threads:
        t.start()
    started = time.perf_counter()
    body()
    elapsed = time.perf_counter() - started
    stop.set()
    for t in threads:
        t.join()
    return latencies, failures, elapsed

delivery_failures = []
def deliver_all():
    for serial in range(2, deliveries + 1):
        with open(f"{work}/payloads/{serial}") as f:
            payload = f.read()
        out = subprocess.run([agent, "receive", "--payload", payload], capture_output=True)
        if out.returncode != 0:
            delivery_failures.append(out.stderr.decode(errors="replace").strip())

busy_lat, busy_fail, busy_time = with_readers(deliver_all)
idle_lat, idle_fail, _ = with_readers(lambda: time.sleep(busy_time))

def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000

print(f"readers:            {readers} parallel aovis-cred loops (release build)")
print(f"deliveries:         {deliveries - 1} back to back in {busy_time:.1f} s ({(deliveries - 1) / busy_time:.0f}/s), failed: {len(delivery_failures)}")
print(f"reads during them:  {len(busy_lat)}, failed: {len(busy_fail)}   (target 0)")
print(f"reads, no delivery: {len(idle_lat)}, failed: {len(idle_fail)}")
print(f"read latency:       p50 {pct(busy_lat, .5):.2f} ms, p99 {pct(busy_lat, .99):.2f} ms with deliveries; "
      f"p50 {pct(idle_lat, .5):.2f} ms, p99 {pct(idle_lat, .99):.2f} ms without")
print(f"ratio:              p50 {pct(busy_lat, .5) / pct(idle_lat, .5):.2f}x, p99 {pct(busy_lat, .99) / pct(idle_lat, .99):.2f}x (with / without deliveries)")
for message in (busy_fail + idle_fail + delivery_failures)[:5]:
    print(f"failure:            {message}")
sys.exit(1 if busy_fail or idle_fail or delivery_failures else 0)
PY
