#!/usr/bin/env bash
# Issue 15's rows.
#   1. cairn on the loopback S3 server (s3s-fs, tools/s3-server) against cairn on a local
#      directory, same data: backup of linux/, backup of random.bin, restore of linux/, and `cat`
#      of random.bin through a fresh mount. Target: S3 within 1.5x of local.
#   2. `cairn copy` of the linux/ snapshots (linux/, linux-edit/, linux/ again) between two local
#      repositories against `restic copy` (both destinations made with the source's chunker
#      parameters). Target: at least 2x faster.
# Writes bench/s3-results.md.
#
#   bash bench/s3.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
DATA=${BENCH_DATA:-/tmp/cairn-bench-data}
SCRATCH=${BENCH_SCRATCH:-/tmp/cairn-bench-s3}
[ -d "$DATA/linux-edit" ] || BENCH_DATA=$DATA bash "$SHARED/prepare-data.sh"
command -v restic >/dev/null || bash "$SHARED/install-peers.sh" --no-rustic
(cd "$HERE/.." && cargo build --release --quiet &&
  cargo install --quiet --locked --path tools/s3-server --root target/s3-server)
CAIRN="$HERE/../target/release/cairn"
SERVER="$HERE/../target/s3-server/bin/cairn-s3-server"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench CAIRN_FROM_PASSWORD=bench RESTIC_FROM_PASSWORD=bench
export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
rm -rf "$SCRATCH"; mkdir -p "$SCRATCH/s3/bench"
RESULTS="$SCRATCH/results.tsv"; : > "$RESULTS"
PORT=19000
"$SERVER" --port $PORT --access-key bench-key --secret-key bench-secret "$SCRATCH/s3" &
SERVER_PID=$!
MNT="$SCRATCH/mnt"; mkdir -p "$MNT"
# Restores land in a tmpfs, as in run.sh: on the scratch ext4 inode allocation for 78,000 files
# varied from run to run more than anything measured here.
OUT=${BENCH_TMPFS:-/tmp/cairn-bench-tmpfs}/s3-restore; mkdir -p "$(dirname "$OUT")"
mountpoint -q "$(dirname "$OUT")" || mount -t tmpfs -o size=4g tmpfs "$(dirname "$OUT")"
trap 'kill $SERVER_PID 2>/dev/null; fusermount3 -u "$MNT" 2>/dev/null || true' EXIT
settle() { python3 -c "b=bytearray(3<<30)"; sync; }

# timed TOOL STEP CMD...: wall seconds and peak RSS (MB) of CMD.
timed() {
  local tool=$1 step=$2; shift 2
  local out="$SCRATCH/time.$tool.$step"
  /usr/bin/time -f "%e %M" -o "$out" bash -c '"$@"' _ "$@" > "$SCRATCH/log.$tool.$step" 2>&1 ||
    { echo "$tool $step failed:"; tail -5 "$SCRATCH/log.$tool.$step"; return 1; }
  read -r secs kb < "$out"
  printf '%s\t%s\t%s\t%s\n' "$tool" "$step" "$secs" "$((kb / 1024))" >> "$RESULTS"
  printf '%-12s %-14s %7.2f s %6d MB\n' "$tool" "$step" "$secs" "$((kb / 1024))"
}

# 1. local against S3.
for where in local s3; do
  case $where in
    local) R="$SCRATCH/repo-local" ;;
    s3) R="s3:http://127.0.0.1:$PORT/bench/repo" ;;
  esac
  "$CAIRN" -q -r "$R" init
  settle; timed "$where" backup-linux "$CAIRN" -q -r "$R" backup "$DATA/linux"
  settle; timed "$where" backup-random "$CAIRN" -q -r "$R" backup "$DATA/random.bin"
  rm -rf "$OUT"
  settle; timed "$where" restore-linux "$CAIRN" -q -r "$R" restore latest~1 --target "$OUT"
  rm -rf "$OUT"
  "$CAIRN" -r "$R" mount "$MNT" > "$SCRATCH/log.$where.mount" 2>&1 &
  MOUNT_PID=$!
  for _ in $(seq 100); do [ -e "$MNT/latest/random.bin" ] && break; sleep 0.1; done
  settle; timed "$where" mount-cat cat "$MNT/latest/random.bin"
  fusermount3 -u "$MNT"; wait "$MOUNT_PID" || true
done

# 2. copy between local repositories.
for tool in cairn restic; do
  SRC="$SCRATCH/copy-src-$tool" DST="$SCRATCH/copy-dst-$tool"
  case $tool in
    cairn)
      "$CAIRN" -q -r "$SRC" init
      b() { "$CAIRN" -q -r "$SRC" backup "$@"; }
      "$CAIRN" -q -r "$DST" init --copy-params-from "$SRC"
      copy() { "$CAIRN" -q -r "$DST" copy --from "$SRC"; } ;;
    restic)
      restic -q -r "$SRC" init
      b() { restic -q -r "$SRC" backup "$@"; }
      restic -q -r "$DST" init --from-repo "$SRC" --copy-chunker-params
      copy() { restic -q -r "$DST" copy --from-repo "$SRC"; } ;;
  esac
  WORK="$SCRATCH/work"; rm -rf "$WORK"; mkdir -p "$WORK"
  for tree in linux linux-edit linux; do
    rsync -a --delete "$DATA/$tree/" "$WORK/linux/"; b "$WORK/linux"
  done
  export SRC DST CAIRN
  export -f copy
  settle; timed "$tool" copy copy
  rm -rf "$SRC" "$DST" "$WORK"
done

python3 - "$RESULTS" "${RESULTS_MD:-$HERE/s3-results.md}" <<'PY'
import sys, datetime, subprocess, platform
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
val = {(r[0], r[1]): (float(r[2]), r[3]) for r in rows}
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
def cell(t, s):
    return "–" if (t, s) not in val else f"{val[(t, s)][0]:.2f} / {val[(t, s)][1]}"
def ratio(a, b, s):
    return "–" if (a, s) not in val or (b, s) not in val else f"{val[(a, s)][0] / val[(b, s)][0]:.2f}x"
out = [f"Measured {datetime.date.today()} on {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, Linux {platform.release()}.", "",
       "| cairn (s / peak MB) | local directory | S3 on loopback (s3s-fs) | S3 / local |", "|---|---|---|---|"]
for step, label in [("backup-linux", "backup of linux/"), ("backup-random", "backup of random.bin"),
                    ("restore-linux", "restore of linux/"), ("mount-cat", "`cat` random.bin through a fresh mount")]:
    out.append(f"| {label} | {cell('local', step)} | {cell('s3', step)} | {ratio('s3', 'local', step)} |")
out += ["", "| copy of 3 linux/ snapshots between local repositories (s / peak MB) | cairn | restic | restic / cairn |", "|---|---|---|---|",
        f"| `copy` | {cell('cairn', 'copy')} | {cell('restic', 'copy')} | {ratio('restic', 'cairn', 'copy')} |"]
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
