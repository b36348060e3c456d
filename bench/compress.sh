#!/usr/bin/env bash
# Issue 26's rows: the first backup and the repository's size against restic, and what must
# not get slower, this build against the one before dictionaries (OLD, a cairn binary built
# from the commit before them), same machine, interleaved rounds (ROUNDS, default 3; medians
# with every run):
#   first backup of linux/ into a fresh repository: cairn, the old cairn, restic (wall time,
#   peak RSS, repository size);
#   then into the same repositories random.bin and linux 6.12 (LINUX2, a second source tree;
#   sizes after each);
#   backup of random.bin alone into a fresh repository (new vs old);
#   restore of linux/ into a tmpfs (new vs old);
#   the mount's sequential read: cat of random.bin through a fresh mount (new vs old).
# Repositories are on the disk, as in bench/run.sh; the page cache holds the data (read before
# each step). Writes bench/compress-results.md.
#
#   OLD=/tmp/cairn-old LINUX2=/tmp/k612/linux-source-6.12 bash bench/compress.sh
# OLD_LABEL says in the results what OLD is (default: the cairn before dictionaries).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
DATA=${BENCH_DATA:-/tmp/cairn-bench-data}
SCRATCH=${BENCH_SCRATCH:-/tmp/cairn-bench-compress}
ROUNDS=${ROUNDS:-3}
OLD=${OLD:?the cairn binary of the commit before dictionaries}
LINUX2=${LINUX2:?a second source tree, e.g. linux 6.12}
[ -d "$DATA/linux" ] || BENCH_DATA=$DATA bash "$SHARED/prepare-data.sh"
command -v restic >/dev/null || bash "$SHARED/install-peers.sh" --no-rustic
(cd "$HERE/.." && cargo build --release --quiet)
NEW="$HERE/../target/release/cairn"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
rm -rf "$SCRATCH"; mkdir -p "$SCRATCH/mnt" "$SCRATCH/tmpfs"
mountpoint -q "$SCRATCH/tmpfs" || mount -t tmpfs -o size=4g tmpfs "$SCRATCH/tmpfs"
# set -e holds in the trap too: each unmount of something not mounted must not end it.
trap 'umount -l "$SCRATCH/mnt" 2>/dev/null || true; umount -l "$SCRATCH/tmpfs" 2>/dev/null || true' EXIT
RESULTS="$SCRATCH/results.tsv"; : > "$RESULTS"
settle() { python3 -c "b=bytearray(3<<30)"; sync; find "$@" -type f -exec cat {} + > /dev/null; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >> "$RESULTS"; printf '%-8s %-20s %10s %s\n' "$1" "$2" "$3" "${4:-}"; }
size_mb() { du -sm "$1" | cut -f1; }
# timed TOOL STEP CMD...: wall seconds and peak RSS (MB).
timed() {
  local tool=$1 step=$2; shift 2
  /usr/bin/time -f "%e %M" -o "$SCRATCH/time" "$@" > "$SCRATCH/log" 2>&1 || { tail -5 "$SCRATCH/log"; exit 1; }
  read -r secs kb < "$SCRATCH/time"
  record "$tool" "$step" "$secs" "$((kb / 1024))"
}
backup_cmd() { # TOOL REPO PATH
  case $1 in
    new) echo "$NEW -q -r $2 backup $3" ;;
    old) echo "$OLD -q -r $2 backup $3" ;;
    restic) echo "restic -q -r $2 backup $3" ;;
  esac
}
init() { # TOOL REPO
  case $1 in
    new) "$NEW" -q -r "$2" init ;;
    old) "$OLD" -q -r "$2" init ;;
    restic) restic -q -r "$2" init > /dev/null ;;
  esac
}

for round in $(seq "$ROUNDS"); do
  for tool in new old restic; do
    repo="$SCRATCH/repo-$tool"
    rm -rf "$repo"; init "$tool" "$repo"
    settle "$DATA/linux"
    timed "$tool" first-backup $(backup_cmd "$tool" "$repo" "$DATA/linux")
    record "$tool" size-linux "$(size_mb "$repo")"
    if [ "$round" = 1 ]; then
      settle "$DATA/random.bin"
      timed "$tool" then-random.bin $(backup_cmd "$tool" "$repo" "$DATA/random.bin")
      record "$tool" size-plus-random "$(size_mb "$repo")"
      settle "$LINUX2"
      timed "$tool" then-linux2 $(backup_cmd "$tool" "$repo" "$LINUX2")
      record "$tool" size-plus-linux2 "$(size_mb "$repo")"
    fi
  done
  for tool in new old; do
    repo="$SCRATCH/rnd-$tool"
    rm -rf "$repo"; init "$tool" "$repo"
    settle "$DATA/random.bin"
    timed "$tool" random.bin $(backup_cmd "$tool" "$repo" "$DATA/random.bin")
    rm -rf "$repo"
  done
  # Which goes first alternates by round: the first after the backups above measured slower
  # (the mount's cat: 1.07x with new always first, 0.98x in 6 alternating rounds).
  order="new old"; [ $((round % 2)) = 0 ] && order="old new"
  for tool in $order; do
    bin=$([ "$tool" = new ] && echo "$NEW" || echo "$OLD")
    repo="$SCRATCH/repo-lx-$tool"
    if [ "$round" = 1 ]; then rm -rf "$repo"; "$bin" -q -r "$repo" init; "$bin" -q -r "$repo" backup "$DATA/linux" "$DATA/random.bin"; fi
    rm -rf "$SCRATCH/tmpfs/out"
    settle "$repo"
    timed "$tool" restore "$bin" -q -r "$repo" restore latest:linux --target "$SCRATCH/tmpfs/out"
    rm -rf "$SCRATCH/tmpfs/out"
    "$bin" -r "$repo" mount "$SCRATCH/mnt" > "$SCRATCH/mount.log" 2>&1 &
    for _ in $(seq 100); do mountpoint -q "$SCRATCH/mnt" && break; sleep 0.1; done
    settle "$repo"
    # To /dev/null: timed keeps a command's output in a log file, and writing 1 GiB there
    # (into fresh page-cache pages) took 1.5-4.8 s, more than the mount's read it measured.
    timed "$tool" mount-cat-random.bin sh -c 'exec cat "$1" > /dev/null' sh "$SCRATCH/mnt/latest/random.bin"
    umount "$SCRATCH/mnt"; wait || true
  done
done

OLD_LABEL=${OLD_LABEL:-cairn before dictionaries} python3 - "$RESULTS" "$HERE/compress-results.md" <<'PY'
import sys, statistics, collections, platform, os
rows = collections.defaultdict(list)
rss = collections.defaultdict(list)
for line in open(sys.argv[1]):
    tool, step, value, extra = (line.rstrip("\n").split("\t") + [""])[:4]
    rows[(tool, step)].append(float(value))
    if extra: rss[(tool, step)].append(int(extra))
def med(t, s): return statistics.median(rows[(t, s)])
def runs(t, s): return ", ".join(f"{v:g}" for v in rows[(t, s)])
def cell(t, s, unit=""):
    if (t, s) not in rows: return "–"
    extra = f" / {max(rss[(t, s)])} MB" if rss.get((t, s)) else ""
    return f"{med(t, s):g}{unit} ({runs(t, s)}){extra}"
out = ["Measured by `bench/compress.sh` (issue 26): " + platform.node() + ", 2 cores; medians of interleaved rounds, runs in brackets, peak RSS after the slash. `old` is " + os.environ["OLD_LABEL"] + ".", "",
       "| row | cairn | cairn (old) | restic | target | met |", "|---|---|---|---|---|---|"]
def row(name, step, target, ok, unit=""):
    out.append(f"| {name} | {cell('new', step, unit)} | {cell('old', step, unit)} | {cell('restic', step, unit)} | {target} | {ok} |")
ratio = med('restic', 'first-backup') / med('new', 'first-backup')
row("first backup of linux/, s", "first-backup", "≥ 2.5× restic", f"{ratio:.2f}× {'met' if ratio >= 2.5 else 'not met'}")
for step, name in [("size-linux", "repository after linux/, MB"), ("size-plus-random", "… + random.bin, MB"), ("size-plus-linux2", "… + linux 6.12, MB")]:
    r = med('new', step) / med('restic', step)
    row(name, step, "≤ 90 % of restic", f"{100*r:.0f} % {'met' if r <= 0.9 else 'not met'}")
for step, name in [("then-random.bin", "random.bin into that repository, s"), ("then-linux2", "linux 6.12 into that repository, s")]:
    row(name, step, "–", "–")
for step, name in [("random.bin", "backup of random.bin (fresh), s"), ("restore", "restore of linux/, s"), ("mount-cat-random.bin", "mount: cat random.bin, s")]:
    r = med('new', step) / med('old', step)
    row(name, step, "no slower than old", f"{r:.2f}× old {'met' if r <= 1.05 else 'not met'}")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
