#!/usr/bin/env bash
# aovis-rotator at fleet scale: one round against bench/rotator_standin.py, a
# synthetic SSM + STS playing N hosts with LATENCY_MS on every call, SendCommand
# throttled to R per second (ThrottlingException) and ERROR_RATE of all calls
# failing with HTTP 500, and LOST_ANSWERS of the delivery SendCommands created and
# then answered HTTP 500 (the stand-in runs the real aovis-agent for those hosts,
# so the rotator's retry meets the agent's real replay refusal). Prints:
#   - wall time of the round against the floor N/R (one SendCommand per host at
#     the throttled rate); target at most 1.2x;
#   - API operations per host (what the rotator called) and HTTP requests per host
#     (what the server saw: retries and refused attempts included); target at most
#     2.3 per host;
#   - hosts accounted for in the report (every one, each with an outcome) and how
#     many were delivered, of them how many by an earlier attempt of a command
#     whose answer was lost (the report's note);
#   - peak RSS of the rotator (GNU time %M); target at most 128 MiB.
# Usage: bench/rotator.sh   (env: N=10000 R=100 LATENCY_MS=20 ERROR_RATE=0.01
#                            LOST_ANSWERS=0.002 CONCURRENCY=32 BURST=R/10
#                            PROFILE=release)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
R=${R:-100}
LATENCY_MS=${LATENCY_MS:-20}
ERROR_RATE=${ERROR_RATE:-0.01}
LOST_ANSWERS=${LOST_ANSWERS:-0.002}
CONCURRENCY=${CONCURRENCY:-32}
BURST=${BURST:-0}   # the server's SendCommand bucket; 0 means R/10
py=${AOVIS_TEST_VENV:-$PWD/.venv}/bin/python
[ -x "$py" ] || py=python3
[ -x /usr/bin/time ] || { echo "bench: needs GNU time (apt-get install time)" >&2; exit 1; }
# PROFILE=debug for a quick check of the script; figures come from release.
PROFILE=${PROFILE:-release}
if [ "$PROFILE" = release ]; then
    cargo build --release --locked -p aovis-rotator -p aovis-agent >/dev/null 2>&1
else
    cargo build --locked -p aovis-rotator -p aovis-agent >/dev/null 2>&1
fi
bin=$PWD/target/$PROFILE

work=$(mktemp -d)
standin_pid=
cleanup() { [ -n "$standin_pid" ] && kill "$standin_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# Every host shares one real recipient: the benchmark measures the rotator, and
# sealing to a real key keeps the cost of age in the figures.
mkdir -p "$work/state" "$work/config"
recipient=$(AOVIS_STATE_DIR=$work/state AOVIS_CONFIG_DIR=$work/config "$bin/aovis-agent" enroll)

"$py" bench/rotator_standin.py --hosts "$N" --rate "$R" --latency-ms "$LATENCY_MS" \
    --error-rate "$ERROR_RATE" --burst "$BURST" --recipient "$recipient" \
    --lost-answers "$LOST_ANSWERS" --agent "$bin/aovis-agent" --agent-config "$work/config" \
    --agent-state "$work/hosts" > "$work/standin.out" &
standin_pid=$!
for _ in $(seq 100); do [ -s "$work/standin.out" ] && break; sleep 0.1; done
port=$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["port"])' "$work/standin.out")

cat > "$work/rotator.toml" <<TOML
region = "us-east-1"
concurrency = $CONCURRENCY
confirm_timeout_seconds = 600
[[binding]]
profile = "default"
role_arn = "arn:aws:iam::111122223333:role/bench"
targets = { tags = { Fleet = ["bench"] } }
TOML

AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=AKIABENCH AWS_SECRET_ACCESS_KEY=bench \
AWS_EC2_METADATA_DISABLED=true AOVIS_LOG=${AOVIS_LOG:-warn} \
    /usr/bin/time -f %M -o "$work/rss" "$bin/aovis-rotator" rotate --config "$work/rotator.toml" \
    > "$work/out.jsonl" 2> "$work/err" || true
curl -s "http://127.0.0.1:$port/_stats" > "$work/stats.json" 2>/dev/null \
    || "$py" -c 'import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
        "http://127.0.0.1:$port/_stats" > "$work/stats.json"

"$py" - "$work" "$N" "$R" <<'PY'
import json, sys
work, n, r = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lines = open(f"{work}/out.jsonl").read().splitlines()
report = json.loads(lines[-1])
stats = json.load(open(f"{work}/stats.json"))
rss_kib = int(open(f"{work}/rss").read().split()[-1])
wall = report["round"]["duration_ms"] / 1000
floor = n / r
ops = sum(report["api_calls"].values())
attempts = sum(report["api_attempts"].values())
seen = sum(stats["requests"].values())
hosts = report["hosts"]
accounted = sum(1 for h in hosts if h["outcome"])
delivered = report["counts"]["delivered"] + report["counts"]["enrolled_and_delivered"]
print(f"hosts N={n}, SendCommand rate R={r:g}/s, floor N/R = {floor:.1f} s")
print(f"wall time            {wall:.1f} s = {wall / floor:.3f} x floor      (target <= 1.2)")
print(f"API operations/host  {ops / n:.3f}   ({ops} operations: {json.dumps(report['api_calls'])})")
print(f"HTTP requests/host   {seen / n:.3f}   ({seen} seen by the server, {attempts} attempts by the SDK: {json.dumps(stats['requests'])})   (target <= 2.3)")
noted = sum(1 for h in hosts if h.get("note"))
print(f"hosts accounted for  {accounted} of {n} (delivered {delivered}, failed {report['counts']['failed']}, not reached {report['counts']['not_reached']})")
print(f"lost answers         {stats.get('lost_answers', 0)} SendCommands created then answered 500; {noted} hosts delivered by that earlier attempt (agent ran {stats.get('agent_runs', 0)} retries)")
print(f"peak RSS             {rss_kib / 1024:.1f} MiB   (target <= 128)")
profile = stats.get("sends_per_second") or []
if profile:
    import datetime
    start = datetime.datetime.fromisoformat(report["round"]["started_at"].replace("Z", "+00:00")).timestamp()
    steady = sorted(profile[5:-1]) or [0]
    print(f"commands/s           first at {stats['first_send'] - start:+.1f} s (whole-second start stamp); "
          f"seconds 1-5: {profile[:5]}; then median {steady[len(steady) // 2]}, "
          f"min {steady[0]}, max {steady[-1]}; last {profile[-3:]} over {len(profile)} s")
if report.get("error"):
    print("round error:", report["error"])
failed = [h for h in hosts if h["outcome"] == "failed"][:3]
for h in [h for h in hosts if h.get("note")][:1]:
    print("  noted:", h["instance_id"], h["note"])
for h in failed:
    print("  failed:", h["instance_id"], h["reason"])
PY
tail -n 3 "$work/err" >&2 || true
