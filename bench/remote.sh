#!/usr/bin/env bash
# Issue 23's rows: a repository across the network. The S3 server (s3s-fs, tools/s3-server) on
# loopback behind the tests' proxy (examples/netproxy.rs) at RTT (default 20ms) a round trip,
# against the same server without the delay and a local directory, same data:
#   backup of linux/ (no delay / delayed); restore of linux/; `cp -a`, `find -name`, `ls -lR`
#   of linux/ through a fresh mount (local repository / delayed store); `cat` of random.bin
#   through a fresh mount against `cairn restore` of it (delayed store); restic and rustic (when
#   installed) on S3 repositories of their own through the same proxy for the same rows, with
#   their default local caches (their mount steps stopped after PEER_LIMIT seconds, default
#   600, the issue's cap). Each cairn row runs ROUNDS times (default 3), the tools
#   interleaved; the median is shown with every run, the server's CPU seconds beside it.
# Writes bench/remote-results.md.
#
#   bash bench/remote.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
DATA=${BENCH_DATA:-/tmp/cairn-bench-data}
SCRATCH=${BENCH_SCRATCH:-/tmp/cairn-bench-remote}
RTT=${RTT:-20ms} ROUNDS=${ROUNDS:-3} PEER_LIMIT=${PEER_LIMIT:-600}
[ -d "$DATA/linux-edit" ] || BENCH_DATA=$DATA bash "$SHARED/prepare-data.sh"
command -v restic >/dev/null || bash "$SHARED/install-peers.sh" --no-rustic
(cd "$HERE/.." && cargo build --release --quiet && cargo build --release --quiet --example netproxy &&
  cargo install --quiet --locked --path tools/s3-server --root target/s3-server)
CAIRN="$HERE/../target/release/cairn"
PROXY="$HERE/../target/release/examples/netproxy"
SERVER="$HERE/../target/s3-server/bin/cairn-s3-server"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
rm -rf "$SCRATCH"; mkdir -p "$SCRATCH/s3/bench" "$SCRATCH/mnt"
RESULTS="$SCRATCH/results.tsv"; : > "$RESULTS"
PORT=19200 PPORT=19201
"$SERVER" --port $PORT --access-key bench-key --secret-key bench-secret "$SCRATCH/s3" \
  > "$SCRATCH/server.log" 2>&1 &
SERVER_PID=$!
"$PROXY" --listen $PPORT --to $PORT --rtt "$RTT" --counts "$SCRATCH/counts" > "$SCRATCH/proxy.log" 2>&1 &
PROXY_PID=$!
MNT="$SCRATCH/mnt"
OUT=${BENCH_TMPFS:-/tmp/cairn-bench-tmpfs}/remote-out; mkdir -p "$(dirname "$OUT")"
mountpoint -q "$(dirname "$OUT")" || mount -t tmpfs -o size=4g tmpfs "$(dirname "$OUT")"
# A restored linux/ takes 1.5 GB there: refuse to measure runs that would fail for room.
[ "$(df --output=avail -B1M "$(dirname "$OUT")" | tail -1)" -ge 2500 ] ||
  { echo "bench/remote.sh: less than 2.5 GB free in $(dirname "$OUT")" >&2; exit 1; }
trap 'fusermount3 -u "$MNT" 2>/dev/null || true; kill $SERVER_PID $PROXY_PID 2>/dev/null' EXIT
settle() { python3 -c "b=bytearray(3<<30)"; sync; }
server_cpu() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
requests() { cut -d' ' -f1 "$SCRATCH/counts"; }

# timed TOOL STEP CMD...: wall seconds, peak RSS (MB), the server's CPU seconds and the
# requests that passed the proxy during CMD.
timed() {
  local tool=$1 step=$2; shift 2
  local out="$SCRATCH/time.$tool.$step" cpu0 req0 status=0
  cpu0=$(server_cpu); sleep 0.2; req0=$(requests)
  /usr/bin/time -f "%e %M" -o "$out" bash -c '"$@"' _ "$@" > "$SCRATCH/log.$tool.$step" 2>&1 || status=$?
  sleep 0.3
  local cpu=$(( $(server_cpu) - cpu0 )) req=$(( $(requests) - req0 ))
  read -r secs kb < <(tail -1 "$out")
  [ "$status" = 0 ] || { secs="$secs!"; echo "$tool $step failed or was stopped:"; tail -3 "$SCRATCH/log.$tool.$step"; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$step" "$secs" "$((kb / 1024))" "$cpu" "$req" >> "$RESULTS"
  printf '%-14s %-12s %8s s %6d MB  server %4s cs  %6d requests\n' "$tool" "$step" "$secs" "$((kb / 1024))" "$cpu" "$req"
}

LOCAL="$SCRATCH/repo-local"
NODELAY="s3:http://127.0.0.1:$PORT/bench/nodelay"
REMOTE="s3:http://127.0.0.1:$PPORT/bench/cairn"
RESTIC="s3:http://127.0.0.1:$PPORT/bench/restic"
RUSTIC_BIN=$(command -v rustic || echo /tmp/cairn-peers/bin/rustic)
[ -x "$RUSTIC_BIN" ] || RUSTIC_BIN=
cat > "$SCRATCH/rustic.toml" <<TOML
[repository]
repository = "opendal:s3"
password = "bench"

[repository.options]
endpoint = "http://127.0.0.1:$PPORT"
bucket = "bench"
root = "/rustic"
region = "us-east-1"
access_key_id = "bench-key"
secret_access_key = "bench-secret"
TOML
rustic() { "$RUSTIC_BIN" -P "$SCRATCH/rustic" "$@"; }
export -f rustic; export RUSTIC_BIN SCRATCH
for r in "$LOCAL" "$NODELAY" "$REMOTE"; do "$CAIRN" -q -r "$r" init; done
restic -q -r "$RESTIC" init
[ -z "$RUSTIC_BIN" ] || rustic init > /dev/null 2>&1
"$CAIRN" -q -r "$LOCAL" backup "$DATA/linux"
settle; timed cairn-nodelay backup-linux "$CAIRN" -q -r "$NODELAY" backup "$DATA/linux"
settle; timed cairn-remote backup-linux "$CAIRN" -q -r "$REMOTE" backup "$DATA/linux"
settle; timed restic-remote backup-linux restic -q -r "$RESTIC" backup "$DATA/linux"
[ -z "$RUSTIC_BIN" ] || { settle; timed rustic-remote backup-linux rustic backup "$DATA/linux"; }
"$CAIRN" -q -r "$REMOTE" backup "$DATA/random.bin"
restic -q -r "$RESTIC" backup "$DATA/random.bin"

# mounted TOOL REPO: a fresh mount of REPO at $MNT.
mounted() {
  case $1 in
    cairn) "$CAIRN" -r "$2" mount "$MNT" > "$SCRATCH/log.mount" 2>&1 & ;;
    restic) restic -r "$2" mount "$MNT" > "$SCRATCH/log.mount" 2>&1 & ;;
    rustic) rustic mount "$MNT" "$(cat "$SCRATCH/rustic-linux-id"):$DATA/linux" > "$SCRATCH/log.mount" 2>&1 & ;;
  esac
  MOUNT_PID=$!
  for _ in $(seq 300); do mountpoint -q "$MNT" && [ -n "$(ls "$MNT")" ] && break; sleep 0.1; done
}
unmount() { fusermount3 -u "$MNT" 2>/dev/null || true; wait "$MOUNT_PID" 2>/dev/null || true; }
# linux_in TOOL: where the linux/ backup is inside the mount.
linux_in() {
  case $1 in
    cairn) echo "$MNT/ids/$(cut -c1-8 "$SCRATCH/linux-id")/linux" ;;
    restic) echo "$MNT/ids/$(cut -c1-8 "$SCRATCH/restic-linux-id")$DATA/linux" ;;
    rustic) echo "$MNT" ;;
  esac
}
"$CAIRN" --json -r "$LOCAL" snapshots | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['id'])" > "$SCRATCH/linux-id-local"
"$CAIRN" --json -r "$REMOTE" snapshots | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['id'])" > "$SCRATCH/linux-id-remote"
restic -r "$RESTIC" snapshots --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['short_id'])" > "$SCRATCH/restic-linux-id"
[ -z "$RUSTIC_BIN" ] || rustic snapshots --json 2>/dev/null | python3 -c "
import json,sys
groups = json.load(sys.stdin)
print(groups[0]['snapshots'][0]['id'][:8])" > "$SCRATCH/rustic-linux-id"

# mount_rows NAME TOOL REPO LIMIT: cp -a, find and ls -lR of linux/, each on a fresh mount.
mount_rows() {
  local name=$1 tool=$2 repo=$3 limit=$4 where
  for step in cp find ls; do
    mounted "$tool" "$repo"
    case $tool in
      cairn) cp "$SCRATCH/linux-id-${name#cairn-}" "$SCRATCH/linux-id" ;;
    esac
    where=$(linux_in "$tool")
    rm -rf "$OUT"; mkdir -p "$OUT"; settle
    case $step in
      cp) timed "$name" mount-cp timeout "$limit" cp -a "$where" "$OUT/" ;;
      find) timed "$name" mount-find timeout "$limit" find "$where" -name Kconfig -printf . ;;
      ls) timed "$name" mount-ls timeout "$limit" ls -lR "$where" ;;
    esac
    unmount; rm -rf "$OUT"
  done
}

for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="local remote"; else order="remote local"; fi
  for where in $order; do
    case $where in
      local) mount_rows cairn-local cairn "$LOCAL" 3600 ;;
      remote) mount_rows cairn-remote cairn "$REMOTE" 3600 ;;
    esac
  done
  rm -rf "$OUT"; settle
  timed cairn-remote restore-linux "$CAIRN" -q -r "$REMOTE" restore "$(cut -c1-8 "$SCRATCH/linux-id-remote")" --target "$OUT"
  rm -rf "$OUT"; settle
  timed cairn-remote restore-random "$CAIRN" -q -r "$REMOTE" restore latest --target "$OUT"
  rm -rf "$OUT"
  mounted cairn "$REMOTE"; settle
  timed cairn-remote mount-cat cat "$MNT/latest/random.bin"
  unmount
done
rm -rf "$OUT"; settle
timed restic-remote restore-linux restic -q -r "$RESTIC" restore "$(cat "$SCRATCH/restic-linux-id")" --target "$OUT"
rm -rf "$OUT"
mount_rows restic-remote restic "$RESTIC" "$PEER_LIMIT"
if [ -n "$RUSTIC_BIN" ]; then
  settle; timed rustic-remote restore-linux rustic restore "$(cat "$SCRATCH/rustic-linux-id")" "$OUT"
  rm -rf "$OUT"
  mount_rows rustic-remote rustic - "$PEER_LIMIT"
fi

python3 - "$RESULTS" "${RESULTS_MD:-$HERE/remote-results.md}" "$RTT" "$PEER_LIMIT" <<'PY'
import sys, datetime, subprocess, platform, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
runs = {}
for tool, step, secs, mb, cpu, req in rows:
    runs.setdefault((tool, step), []).append((secs, mb, int(cpu), int(req)))
def num(s): return float(s.rstrip("!"))
def med(tool, step):
    r = runs.get((tool, step))
    return None if not r else statistics.median(num(x[0]) for x in r)
def cell(tool, step):
    r = runs.get((tool, step))
    if not r: return "–"
    m = statistics.median(num(x[0]) for x in r)
    all_ = ", ".join(x[0] for x in r)
    stopped = " (stopped)" if any(x[0].endswith("!") for x in r) else ""
    if tool.endswith("-local") or tool.endswith("-nodelay"):
        return f"{m:.2f}{stopped} ({all_}) / {max(int(x[1]) for x in r)} MB / server {statistics.median(x[2] for x in r) / 100:.1f} s"
    return f"{m:.2f}{stopped} ({all_}) / {max(int(x[1]) for x in r)} MB / server {statistics.median(x[2] for x in r) / 100:.1f} s / {int(statistics.median(x[3] for x in r))} req"
def ratio(a, b):
    return "–" if a is None or b is None else f"{a / b:.2f}x"
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
out = [f"Measured {datetime.date.today()} on {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, Linux {platform.release()}; "
       f"store: s3s-fs on loopback behind the proxy at {sys.argv[3]} a round trip; each cell: median seconds (every run) / peak MB / the server's CPU / requests at the proxy.", "",
       "| row | cairn, local repository or no delay | cairn, remote | restic, remote | rustic, remote | target |", "|---|---|---|---|---|---|"]
def row(label, local, step, target):
    out.append(f"| {label} | {cell(local, step) if local else '–'} | {cell('cairn-remote', step)} | {cell('restic-remote', step)} | {cell('rustic-remote', step)} | {target} |")
def fastest_peer(step):
    found = [m for m in (med('restic-remote', step), med('rustic-remote', step)) if m is not None]
    return min(found) if found else None
row("first backup of linux/", "cairn-nodelay", "backup-linux", f"remote / no delay ≤ 1.3: {ratio(med('cairn-remote','backup-linux'), med('cairn-nodelay','backup-linux'))}")
row("`cp -a` of linux/ from a fresh mount", "cairn-local", "mount-cp", f"remote / local ≤ 2: {ratio(med('cairn-remote','mount-cp'), med('cairn-local','mount-cp'))}; fastest peer / cairn ≥ 10: {ratio(fastest_peer('mount-cp'), med('cairn-remote','mount-cp'))}")
row("`find -name Kconfig` through a fresh mount", "cairn-local", "mount-find", f"remote / local ≤ 2: {ratio(med('cairn-remote','mount-find'), med('cairn-local','mount-find'))}; fastest peer / cairn ≥ 10: {ratio(fastest_peer('mount-find'), med('cairn-remote','mount-find'))}")
row("`ls -lR` through a fresh mount", "cairn-local", "mount-ls", f"remote / local ≤ 2: {ratio(med('cairn-remote','mount-ls'), med('cairn-local','mount-ls'))}; fastest peer / cairn ≥ 10: {ratio(fastest_peer('mount-ls'), med('cairn-remote','mount-ls'))}")
row("restore of linux/", None, "restore-linux", f"restic / cairn ≥ 2.5: {ratio(med('restic-remote','restore-linux'), med('cairn-remote','restore-linux'))}")
row("restore of random.bin", None, "restore-random", "")
row("`cat` random.bin through a fresh mount", None, "mount-cat", f"mount / restore ≤ 1.5: {ratio(med('cairn-remote','mount-cat'), med('cairn-remote','restore-random'))}")
out.append("")
out.append(f"The peers' mount steps are stopped after {sys.argv[4]} s (marked `!`, stopped); restic and rustic run with their default local caches, which their backups filled.")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
