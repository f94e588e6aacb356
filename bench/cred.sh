#!/usr/bin/env bash
# aovis-cred's cost, against `cat` of the same cache file, in one run.
#
# botocore re-runs the helper on every API call once fewer than 15 minutes are left,
# so its start-up is paid per request. This prints:
#   - mean wall time of `aovis-cred --profile bench` and of `cat` of the same file
#     (hyperfine -N, no shell; interleaved in blocks so drift hits both alike) and
#     their ratio; target at most 1.05x;
#     and against a minimal Rust read-and-print binary built here with the same
#     release profile (the floor any Rust binary pays: its runtime's start-up);
#   - the release binary's size; target at most 1 MiB;
#   - peak RSS of one run of each; target at most 2.5 MiB.
# Usage: bench/cred.sh [BLOCKS] [RUNS_PER_BLOCK]   (default 10 x 100 = 1000 runs each)
set -euo pipefail
cd "$(dirname "$0")/.."
blocks=${1:-10}
runs=${2:-100}

command -v hyperfine >/dev/null || { echo "bench: needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: needs GNU time (apt-get install time)" >&2; exit 1; }
cargo build --release --locked -p aovis-cred >/dev/null 2>&1
bin=$PWD/target/release/aovis-cred

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -m 0755 "$work/profiles"
expiry=$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)
cat > "$work/profiles/bench.json" <<JSON
{"Version":1,"AccessKeyId":"ASIABENCHMARK0000001","SecretAccessKey":"$(head -c 30 /dev/urandom | base64)","SessionToken":"$(head -c 600 /dev/urandom | base64 -w0)","Expiration":"$expiry","Aovis":{"serial":1,"role_arn":"arn:aws:iam::111122223333:role/bench","instance_id":"mi-0123456789abcdef0","issued_at":"2026-11-22T12:00:00Z","received_at":"2026-11-22T12:00:01Z"}}
JSON
chmod 0640 "$work/profiles/bench.json"
export AOVIS_STATE_DIR=$work

# The floor: the smallest Rust program that reads the file and prints it, with the
# workspace's release profile, so the ratio to it is aovis-cred's own cost.
mkdir -p "$work/minimal/src"
cat > "$work/minimal/Cargo.toml" <<'TOML'
[package]
name = "minimal"
version = "0.0.0"
edition = "2021"
[workspace]
[profile.release]
opt-level = 3
lto = "fat"
codegen-units = 1
panic = "abort"
strip = true
TOML
cat > "$work/minimal/src/main.rs" <<'RS'
use std::io::Write;
fn main() {
    let path = std::env::args_os().nth(1).expect("a path");
    let bytes = std::fs::read(path).expect("readable");
    std::io::stdout().write_all(&bytes).expect("stdout");
}
RS
cargo build --quiet --release --offline --manifest-path "$work/minimal/Cargo.toml" --target-dir "$work/minimal/target"
minimal=$work/minimal/target/release/minimal

for i in $(seq "$blocks"); do
    hyperfine -N --warmup 20 --runs "$runs" --style none \
        --export-json "$work/block-$i.json" \
        "cat $work/profiles/bench.json" "$minimal $work/profiles/bench.json" \
        "$bin --profile bench" >/dev/null
done

python3 - "$work" "$bin" "$blocks" <<'PY'
import glob, json, os, subprocess, sys, statistics
work, binary, blocks = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = {"cat": [], "minimal": [], "aovis-cred": []}
for path in glob.glob(f"{work}/block-*.json"):
    for result in json.load(open(path))["results"]:
        command = result["command"]
        key = "cat" if command.startswith("cat ") else "minimal" if "/minimal " in command else "aovis-cred"
        times[key].extend(result["times"])
def peak_rss_kib(argv):
    # GNU time's %M: the child's own high-water mark (GNU time itself is ~1 MiB, so
    # `true` measures about 1 MiB: the floor of any process here).
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, check=True)
    return int(out.stderr.strip().splitlines()[-1])
cat_mean = statistics.mean(times["cat"]) * 1e6
cred_mean = statistics.mean(times["aovis-cred"]) * 1e6
minimal_mean = statistics.mean(times["minimal"]) * 1e6
size = os.path.getsize(binary)
rss_cred = peak_rss_kib([binary, "--profile", "bench"])
rss_cat = peak_rss_kib(["cat", f"{work}/profiles/bench.json"])
print(f"runs:            {len(times['aovis-cred'])} each ({blocks} interleaved blocks)")
print(f"cat:             mean {cat_mean:7.1f} us  (median {statistics.median(times['cat'])*1e6:.1f} us)")
print(f"minimal Rust:    mean {minimal_mean:7.1f} us  (median {statistics.median(times['minimal'])*1e6:.1f} us)")
print(f"aovis-cred:      mean {cred_mean:7.1f} us  (median {statistics.median(times['aovis-cred'])*1e6:.1f} us)")
print(f"ratio:           {cred_mean / cat_mean:.3f}x cat   (target <= 1.05x)")
print(f"                 {minimal_mean / cat_mean:.3f}x cat for the minimal Rust binary (the floor)")
print(f"                 {cred_mean / minimal_mean:.3f}x the minimal Rust binary")
print(f"binary size:     {size} bytes = {size / 1048576:.2f} MiB   (target <= 1 MiB)")
print(f"peak RSS:        aovis-cred {rss_cred} KiB = {rss_cred / 1024:.2f} MiB, cat {rss_cat} KiB   (target <= 2.5 MiB)")
PY
