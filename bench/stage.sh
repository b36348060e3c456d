#!/usr/bin/env bash
# Issue 24's rows: the stage against `cairn backup` of the same tree, same machine, interleaved
# rounds (ROUNDS, default 3; the median shown with every run):
#   first copy:  `cairn backup` of linux/ into a fresh repository, against `rsync -a linux/`
#                into an empty stage of a fresh repository plus `stage --commit` (overlay stage
#                and FUSE stage);
#   edited copy: `cairn backup` of the working copy after linux-edit/ was rsynced over it (the
#                first snapshot its parent), against `rsync -a --delete linux-edit/` into a stage
#                on the first snapshot plus commit;
# plus `rsync -a linux/` into an empty tmpfs directory, the kernel's floor. Wall time from
# starting the stage to the commit's answer; the stage process's peak RSS.
#
# The working copy and the overlay stage's spool (--spool-dir) are on a tmpfs: on this VM's
# root ext4 creating a file costs ~280 us (cp -a of linux/ takes 32 s there, 5 s into a tmpfs),
# which would make the rows measure the disk. Repositories are on the disk, as in bench/run.sh.
# Writes bench/stage-results.md.
#
#   bash bench/stage.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
DATA=${BENCH_DATA:-/tmp/cairn-bench-data}
SCRATCH=${BENCH_SCRATCH:-/tmp/cairn-bench-stage}
ROUNDS=${ROUNDS:-3}
[ -d "$DATA/linux-edit" ] || BENCH_DATA=$DATA bash "$SHARED/prepare-data.sh"
(cd "$HERE/.." && cargo build --release --quiet)
CAIRN="$HERE/../target/release/cairn"
export CAIRN_PASSWORD=bench
rm -rf "$SCRATCH"; mkdir -p "$SCRATCH/mnt" "$SCRATCH/ram"
RAM="$SCRATCH/ram"
mount -t tmpfs -o size=8g,mode=0700 tmpfs "$RAM"
trap 'umount -l "$SCRATCH/mnt" 2>/dev/null; umount -l "$RAM" 2>/dev/null; true' EXIT
mkdir -m 0700 "$RAM/spool"
RESULTS="$SCRATCH/results.tsv"; : > "$RESULTS"
# These VMs drop page-cache pages within minutes; every row reads its source from the page cache
# (the edited tree and its work copy are read through the first's).
settle() {
  python3 -c "b=bytearray(3<<30)"; sync
  find "$DATA/linux" "$DATA/linux-edit" -type f -exec cat {} + > /dev/null
}

# record STEP SECONDS MB
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$RESULTS"; printf '%-22s %8s s %6s MB\n' "$1" "$2" "$3"; }

# backup_row STEP REPO PATH: times `cairn backup PATH`.
backup_row() {
  local step=$1 repo=$2 path=$3
  settle
  /usr/bin/time -f "%e %M" -o "$SCRATCH/time" "$CAIRN" -q -r "$repo" backup "$path" > /dev/null
  read -r secs kb < "$SCRATCH/time"
  record "$step" "$secs" "$((kb / 1024))"
}

# stage_row STEP REPO SOURCE STAGE-ARGS...: times a stage, rsync -a --delete SOURCE into it and
# the commit.
stage_row() {
  local step=$1 repo=$2 src=$3; shift 3
  local mnt="$SCRATCH/mnt"
  settle
  local start; start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$SCRATCH/rss" "$CAIRN" -q -r "$repo" stage "$mnt" "$@" \
    > "$SCRATCH/log.$step" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do mountpoint -q "$mnt" && break; sleep 0.05; done
  rsync -a --delete "$src/" "$mnt/"
  "$CAIRN" -q -r "$repo" stage --commit "$mnt" > /dev/null
  wait "$pid"
  local end; end=$(date +%s.%N)
  record "$step" "$(python3 -c "print(f'{$end - $start:.2f}')")" "$(( $(tail -1 "$SCRATCH/rss") / 1024 ))"
}

for round in $(seq "$ROUNDS"); do
  echo "round $round"
  # The kernel's floor.
  settle
  start=$(date +%s.%N); rsync -a "$DATA/linux/" "$RAM/floor/"; end=$(date +%s.%N)
  record rsync-into-tmpfs "$(python3 -c "print(f'{$end - $start:.2f}')")" -
  rm -rf "$RAM/floor"

  # backup: first and increment, of a working copy (unchanged files keep inode and ctime).
  rm -rf "$SCRATCH/repo-backup" "$RAM/work"; cp -a "$DATA/linux" "$RAM/work"
  "$CAIRN" -q -r "$SCRATCH/repo-backup" init
  backup_row backup-first "$SCRATCH/repo-backup" "$RAM/work"
  rsync -a --delete "$DATA/linux-edit/" "$RAM/work/"
  backup_row backup-edit "$SCRATCH/repo-backup" "$RAM/work"
  rm -rf "$SCRATCH/repo-backup" "$RAM/work"

  for kind in overlay fuse; do
    repo="$SCRATCH/repo-$kind"
    rm -rf "$repo"; "$CAIRN" -q -r "$repo" init
    extra=(--spool-dir "$RAM/spool"); [ "$kind" = fuse ] && extra=(--fuse)
    stage_row "$kind-first" "$repo" "$DATA/linux" --path /bench/linux --empty "${extra[@]}"
    stage_row "$kind-edit" "$repo" "$DATA/linux-edit" --path /bench/linux "${extra[@]}"
    "$CAIRN" -q -r "$repo" check > /dev/null
    rm -rf "$repo"
  done
done

python3 - "$RESULTS" "$HERE/stage-results.md" "$ROUNDS" <<'PY'
import sys, statistics, collections, datetime, platform
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    step, secs, mb = line.rstrip("\n").split("\t")
    rows[step].append((float(secs), mb))
def med(step):
    return statistics.median(s for s, _ in rows[step])
def cell(step):
    runs = ", ".join(f"{s:.2f}" for s, _ in rows[step])
    peak = max((int(m) for _, m in rows[step] if m != "-"), default=None)
    return f"{med(step):.2f} (runs {runs})" + (f" / {peak} MB" if peak is not None else "")
out = [f"Measured {datetime.date.today()}, Linux {platform.release()}, {sys.argv[3]} interleaved rounds, "
       "median (every run) / peak RSS. Working copy and overlay spool on a tmpfs, repositories on disk.", "",
       "| row | seconds / peak | × backup | target |", "|---|---|---|---|"]
out.append(f"| rsync -a linux/ into an empty tmpfs directory (the kernel's floor) | {cell('rsync-into-tmpfs')} | | |")
out.append(f"| cairn backup of linux/ (first) | {cell('backup-first')} | 1 | |")
out.append(f"| overlay stage: rsync -a linux/ + commit | {cell('overlay-first')} | {med('overlay-first')/med('backup-first'):.2f} | ≤ 2 |")
out.append(f"| FUSE stage: rsync -a linux/ + commit | {cell('fuse-first')} | {med('fuse-first')/med('backup-first'):.2f} | ≤ 4 |")
out.append(f"| cairn backup of the edited copy (first snapshot its parent) | {cell('backup-edit')} | 1 | |")
out.append(f"| overlay stage: rsync -a --delete linux-edit/ + commit | {cell('overlay-edit')} | {med('overlay-edit')/med('backup-edit'):.2f} | ≤ 1.5 |")
out.append(f"| FUSE stage: rsync -a --delete linux-edit/ + commit | {cell('fuse-edit')} | {med('fuse-edit')/med('backup-edit'):.2f} | |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
