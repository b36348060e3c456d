#!/usr/bin/env bash
# Compares two builds of cairn on the rows users feel every day, in interleaved rounds (A B B A
# ...), and reports each row's median per build: whether a change slowed anything down.
#   OLD=/path/to/old/cairn NEW=target/release/cairn ROUNDS=3 bash bench/versions.sh
# Rows: backup of linux/ into a fresh repository, backup of random.bin, restore of linux/ into a
# tmpfs, and on a fresh mount `cat random.bin` and `cp -a linux/` into the tmpfs (repository read
# into the page cache first, as bench/run.sh does). Data: ../shared/bench/prepare-data.sh.
# Writes versions-results.md beside this script.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DATA=${BENCH_DATA:-/tmp/cairn-bench-data}
SCRATCH=${BENCH_SCRATCH:-/tmp/cairn-bench-versions}
ROUNDS=${ROUNDS:-3}
OLD=${OLD:?set OLD to the cairn binary to compare against}
NEW=${NEW:-$HERE/../target/release/cairn}
export CAIRN_PASSWORD=bench
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
TMPFS="$SCRATCH/tmpfs"
mkdir -p "$TMPFS"
mountpoint -q "$TMPFS" || mount -t tmpfs -o size=4g tmpfs "$TMPFS"
trap 'umount "$TMPFS" 2>/dev/null || true' EXIT
RESULTS="$SCRATCH/results.tsv"
: > "$RESULTS"

settle() { python3 -c "b=bytearray(3<<30)"; sync; }
warm() { find "$1" -type f -exec cat {} + > /dev/null; }

# timed BUILD ROW CMD...: wall seconds of CMD, after settling the page cache's free pages.
timed() {
  local build=$1 row=$2; shift 2
  settle
  local start end
  start=$(date +%s.%N)
  "$@" > "$SCRATCH/log.$build.$row" 2>&1 || { echo "$build $row failed:"; tail -5 "$SCRATCH/log.$build.$row"; exit 1; }
  end=$(date +%s.%N)
  local secs
  secs=$(python3 -c "print(f'{$end - $start:.2f}')")
  printf '%s\t%s\t%s\n' "$build" "$row" "$secs" >> "$RESULTS"
  printf '%-4s %-16s %7s s\n' "$build" "$row" "$secs"
}

mounted() { # BIN REPO MNT: starts a mount and waits for it
  "$1" -q -r "$2" mount "$3" > "$SCRATCH/mount.log" 2>&1 &
  for _ in $(seq 200); do mountpoint -q "$3" && return 0; sleep 0.05; done
  echo "mount did not come up"; cat "$SCRATCH/mount.log"; exit 1
}

round() { # BUILD BIN
  local build=$1 bin=$2 repo="$SCRATCH/repo-$1" mnt="$SCRATCH/mnt"
  rm -rf "$repo" "$TMPFS"/*
  "$bin" -q -r "$repo" init
  timed "$build" backup-linux "$bin" -q -r "$repo" backup "$DATA/linux"
  timed "$build" backup-random "$bin" -q -r "$repo" backup "$DATA/random.bin"
  local linux
  linux=$("$bin" -r "$repo" --json snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  timed "$build" restore-linux "$bin" -q -r "$repo" restore "$linux" --target "$TMPFS/restore"
  rm -rf "$TMPFS/restore"
  mkdir -p "$mnt"
  warm "$repo"; mounted "$bin" "$repo" "$mnt"
  timed "$build" mount-cat-random cat "$mnt/latest/random.bin"
  fusermount3 -u "$mnt"; sleep 0.5
  warm "$repo"; mounted "$bin" "$repo" "$mnt"
  timed "$build" mount-cp-linux cp -a "$mnt/ids/${linux:0:8}/linux" "$TMPFS/copy"
  fusermount3 -u "$mnt"; sleep 0.5
  rm -rf "$TMPFS/copy"
}

# The order alternates (old new, new old, ...): on these VMs whichever runs second in a pair is
# measurably slower (a mount's `cp -a` by a fifth), so a fixed order would favour one build.
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  if [ $((r % 2)) = 1 ]; then
    round old "$OLD"; round new "$NEW"
  else
    round new "$NEW"; round old "$OLD"
  fi
done

python3 - "$RESULTS" "$HERE/versions-results.md" "$ROUNDS" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    build, row, secs = line.split()
    rows.setdefault(row, {}).setdefault(build, []).append(float(secs))
out = [f"Two builds of cairn, {sys.argv[3]} interleaved rounds (old new, new old, ...); "
       "median seconds, every run in brackets.", "",
       "| row | old | new | new / old |", "|---|---|---|---|"]
for row, builds in rows.items():
    old, new = statistics.median(builds["old"]), statistics.median(builds["new"])
    runs = lambda b: ", ".join(f"{x:.2f}" for x in builds[b])
    out.append(f"| {row} | {old:.2f} ({runs('old')}) | {new:.2f} ({runs('new')}) | {new / old:.2f} |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
