#!/usr/bin/env bash
# Measures cairn against restic, borg and rustic (when installed) on the same data, in one run:
# first backup of linux/, unchanged re-backup, linux-edit/ as an increment, backup of random.bin,
# full restore, check --read-data; then, through each tool's FUSE mount (fresh each time): cat of random.bin,
# cp -a of linux/, 2,000 random 4 KiB reads. Wall time, peak RSS and repository size per step.
# Writes bench/results.md.
#
#   bash bench/run.sh            # prepares data and peers if missing (see ../shared/bench)
#   TOOLS="cairn restic" bash bench/run.sh
#
# The data is backed up from a working copy (work/) so that the increment is a real one: the
# edited tree is rsynced over the copy, changing about 1% of files and leaving the rest (inode,
# ctime, mtime) untouched, as a user's next backup would see it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
DATA=${BENCH_DATA:-/tmp/cairn-bench-data}
SCRATCH=${BENCH_SCRATCH:-/tmp/cairn-bench-run}
PEERS=${PEERS_DIR:-/tmp/cairn-peers}
export PATH="$PEERS/bin:$PATH"

[ -d "$DATA/linux-edit" ] || BENCH_DATA=$DATA bash "$SHARED/prepare-data.sh"
command -v restic >/dev/null && command -v borg >/dev/null || bash "$SHARED/install-peers.sh" --no-rustic
command -v rsync >/dev/null || apt-get install -y -qq rsync >/dev/null
(cd "$HERE/.." && cargo build --release --quiet)
CAIRN="$HERE/../target/release/cairn"

TOOLS=${TOOLS:-"cairn restic borg rustic"}
command -v rustic >/dev/null || TOOLS=${TOOLS//rustic/}

export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench RUSTIC_PASSWORD=bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

# REUSE=1 keeps the repositories of the previous run in $SCRATCH and STEPS picks rows to measure
# again (e.g. STEPS="restore" REUSE=1); by default everything is measured from scratch.
STEPS=${STEPS:-"backup restore check mount stage"}
want() { [[ " $STEPS " == *" $1 "* ]]; }
if [ "${REUSE:-0}" != 1 ]; then rm -rf "$SCRATCH"; fi
mkdir -p "$SCRATCH"
RESULTS="$SCRATCH/results.tsv"
: > "$RESULTS"

# Restores and copies out of mounts land in a tmpfs: on the scratch ext4, creating 78,000
# inodes again and again made inode allocation dominate those rows for every tool alike.
TMPFS="$SCRATCH/tmpfs"
mkdir -p "$TMPFS"
mountpoint -q "$TMPFS" || mount -t tmpfs -o size=4g tmpfs "$TMPFS"

# The VMs return freed pages to the host; the first write into a fresh page is slow. Touch and
# free a few GiB before each timed step so every contender starts alike.
settle() { python3 -c "b=bytearray(3<<30)" ; sync; }
# These VMs also drop page-cache pages within minutes, with gigabytes free (fincore: 1.35 GB of
# packs read, 1.17 GB still cached a minute later); a mount row reads the repository back in
# first, so every tool is measured against a repository in page cache, as the issue's are.
warm() { find "$1" -type f -exec cat {} + > /dev/null; }

# timed TOOL STEP CMD...: runs CMD, records wall seconds and peak RSS (MB).
timed() {
  local tool=$1 step=$2; shift 2
  settle
  local out="$SCRATCH/time.$tool.$step"
  /usr/bin/time -f "%e %M" -o "$out" bash -c '"$@"' _ "$@" > "$SCRATCH/log.$tool.$step" 2>&1 ||
    { echo "$tool $step failed:"; tail -5 "$SCRATCH/log.$tool.$step"; return 1; }
  read -r secs kb < "$out"
  printf '%s\t%s\t%s\t%s\n' "$tool" "$step" "$secs" "$((kb / 1024))" >> "$RESULTS"
  printf '%-7s %-12s %7.2f s %6d MB\n' "$tool" "$step" "$secs" "$((kb / 1024))"
}

repo_size() { du -sm "$SCRATCH/repo-$1" | cut -f1; }

# mount_cmd TOOL REPO MNT: the tool's foreground mount command.
mount_cmd() {
  case $1 in
    cairn) echo "$CAIRN -r $2 mount $3" ;;
    restic) echo "restic -r $2 mount $3" ;;
    borg) echo "borg mount -f $2 $3" ;;
    rustic) echo "rustic -r $2 mount $3" ;;
  esac
}

# find_in_mount MNT NAME TYPE: the first path of that name below the mount (layouts differ).
# Snapshot trees named linux are pruned, so finding random.bin does not walk them.
find_in_mount() {
  local found=""
  for _ in $(seq 1 120); do
    if [ "$3" = d ]; then
      found=$(timeout 60 find "$1" -maxdepth 9 -name "$2" -type d -print -quit 2>/dev/null || true)
    else
      found=$(timeout 60 find "$1" -maxdepth 9 -type d -name linux -prune -o -name "$2" -type f -print -quit 2>/dev/null || true)
    fi
    [ -n "$found" ] && break
    sleep 0.5
  done
  echo "$found"
}

# mount_once TOOL REPO STEP NAME TYPE OP: mounts afresh, finds NAME (untimed), times `OP path`
# (then removes what a copy left in the tmpfs, untimed); sets SECS (empty on failure) and RSS_KB,
# the mount process's peak RSS.
mount_once() {
  local tool=$1 repo=$2 step=$3 name=$4 type=$5 op=$6
  MNT="$SCRATCH/mnt"; mkdir -p "$MNT"
  SECS="" RSS_KB=""
  settle
  warm "$repo"
  /usr/bin/time -f "%M" -o "$SCRATCH/mountrss" $(mount_cmd "$tool" "$repo" "$MNT") > "$SCRATCH/log.$tool.mount" 2>&1 &
  local pid=$!
  local path; path=$(find_in_mount "$MNT" "$name" "$type")
  if [ -z "$path" ]; then
    echo "$tool $step: $name not found in the mount"
  else
    local start end
    start=$(date +%s.%N)
    if "$op" "$path" > "$SCRATCH/out.$tool.$step" 2>&1; then
      end=$(date +%s.%N)
      SECS=$(python3 -c "print(f'{$end - $start:.2f}')")
    else
      echo "$tool $step failed: $(tail -3 "$SCRATCH/out.$tool.$step")"
    fi
    rm -rf "$TMPFS/tree"
  fi
  fusermount3 -u "$MNT" 2>/dev/null || fusermount -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  RSS_KB=$(tail -1 "$SCRATCH/mountrss" 2>/dev/null || true)
}

# mount_step TOOL REPO STEP NAME TYPE OP [RUNS]: mount_once RUNS times (default 1; stops at the
# first failure); records the median wall time, every run's time and the highest peak RSS.
# This machine's speed drifts by tens of percent within minutes, so a throughput row taken from
# one run each says more about the moment than about the tools.
mount_step() {
  local tool=$1 step=$3 runs=${7:-1}
  local times=() peak=0
  for _ in $(seq "$runs"); do
    mount_once "$@"
    [[ "$RSS_KB" =~ ^[0-9]+$ ]] && [ "$RSS_KB" -gt "$peak" ] && peak=$RSS_KB
    [ -n "$SECS" ] || break
    times+=("$SECS")
  done
  if [ "${#times[@]}" -gt 0 ]; then
    local median; median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (${#times[@]} + 1) / 2 ))p")
    printf '%s\t%s\t%s\t%s\n' "$tool" "$step" "$median" - >> "$RESULTS"
    printf '%s\t%s\t%s\t%s\n' "$tool" "$step-runs" "${times[*]}" - >> "$RESULTS"
    printf '%-7s %-22s %7s s  (runs: %s)\n' "$tool" "$step" "$median" "${times[*]}"
  fi
  [ "$peak" -gt 0 ] && printf '%s\t%s\t%s\t%s\n' "$tool" "$step-rss-MB" "$((peak / 1024))" - >> "$RESULTS" || true
}

seq_read() { cat "$1" > /dev/null; }
# cp -a into the tmpfs, capped at COPY_LIMIT seconds; the copy is removed after the timing.
COPY_LIMIT=${COPY_LIMIT:-300}
# Fresh mounts per throughput row (cat, cp -a); the row is their median.
MOUNT_RUNS=${MOUNT_RUNS:-3}
copy_tree() { timeout "$COPY_LIMIT" cp -a "$1" "$TMPFS/tree"; }
random_reads() {
  local med p99
  read -r med p99 < <(python3 "$HERE/random_reads.py" "$1")
  printf '%s\t%s\t%s\t%s\n' "$CUR_TOOL" "random-4k-median-ms" "$med" - >> "$RESULTS"
  printf '%s\t%s\t%s\t%s\n' "$CUR_TOOL" "random-4k-p99-ms" "$p99" - >> "$RESULTS"
}

# The read-only mount rows (issue 3), each on a fresh mount so caches start cold.
mount_bench() {
  CUR_TOOL=$1
  mount_step "$1" "$2" mount-cat-random.bin random.bin f seq_read "$MOUNT_RUNS"
  mount_step "$1" "$2" mount-cp-a-linux linux d copy_tree "$MOUNT_RUNS"
  mount_step "$1" "$2" mount-random-4k random.bin f random_reads
}

# Issue 4: rsync of linux/ into an empty stage of a fresh repository plus commit (compare with
# the first backup rows), then linux-edit/ into a new stage on top of it; wall time from
# starting the stage to the commit's answer, and the stage process's peak RSS.
stage_run() {
  local step=$1 repo=$2 src=$3; shift 3
  local mnt="$SCRATCH/stage-mnt"
  mkdir -p "$mnt"
  settle
  local start; start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$SCRATCH/stagerss" "$CAIRN" -q -r "$repo" stage "$mnt" --path /bench/linux "$@" \
    > "$SCRATCH/log.cairn.$step" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.05; done
  rsync -a --delete "$src/" "$mnt/"
  "$CAIRN" -q -r "$repo" stage --commit "$mnt" > /dev/null
  wait "$pid"
  local end; end=$(date +%s.%N)
  local kb; kb=$(tail -1 "$SCRATCH/stagerss")
  printf 'cairn\t%s\t%s\t%s\n' "$step" "$(python3 -c "print(f'{$end - $start:.2f}')")" "$((kb / 1024))" >> "$RESULTS"
}
stage_bench() {
  local repo="$SCRATCH/repo-cairn-stage"
  rm -rf "$repo"
  "$CAIRN" -q -r "$repo" init
  stage_run stage-rsync-linux "$repo" "$DATA/linux" --empty
  stage_run stage-rsync-linux-edit "$repo" "$DATA/linux-edit"
  rm -rf "$repo"
}

WORK="$SCRATCH/work"
reset_work() { rm -rf "$WORK"; mkdir -p "$WORK"; cp -a "$DATA/linux" "$WORK/linux"; }

for tool in $TOOLS; do
  R="$SCRATCH/repo-$tool"
  want backup && reset_work
  case $tool in
    cairn)
      want backup && "$CAIRN" -r "$R" init -q
      b()  { "$CAIRN" -q -r "$R" backup "$2"; }
      rs() { "$CAIRN" -q -r "$R" restore "$1" --target "$2"; }
      first_id() { "$CAIRN" -r "$R" --json snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])'; }
      ck() { "$CAIRN" -q -r "$R" check --read-data; } ;;
    restic)
      want backup && restic -r "$R" init -q
      b()  { restic -r "$R" backup -q "$2"; }
      rs() { restic -r "$R" restore -q "$1" --target "$2"; }
      first_id() { restic -r "$R" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])'; }
      ck() { restic -r "$R" check -q --read-data; } ;;
    borg)
      want backup && borg init -e repokey "$R"
      b()  { borg create --compression zstd,3 "$R::$1" "$2"; }
      rs() { (mkdir -p "$2" && cd "$2" && borg extract "$R::$1"); }
      first_id() { echo s1; }
      ck() { borg check --verify-data "$R"; } ;;
    rustic)
      want backup && rustic -r "$R" init >/dev/null 2>&1
      b()  { rustic -r "$R" backup "$2"; }
      rs() { rustic -r "$R" restore "$1" "$2"; }
      # rustic groups snapshots (by host and paths): take the oldest of all, the linux/ one.
      first_id() { rustic -r "$R" snapshots --json 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(min((s for g in d for s in g["snapshots"]), key=lambda s: s["time"])["id"])'; }
      ck() { rustic -r "$R" check --read-data; } ;;
  esac
  export R CAIRN
  export -f b rs ck
  if want backup; then
    timed "$tool" first-backup b s1 "$WORK/linux"
    printf '%s\t%s\t%s\t%s\n' "$tool" repo-size-MB "$(repo_size "$tool")" - >> "$RESULTS"
    timed "$tool" unchanged b s2 "$WORK/linux"
    rsync -a --delete "$DATA/linux-edit/" "$WORK/linux/"
    timed "$tool" increment b s3 "$WORK/linux"
    timed "$tool" random.bin b s4 "$DATA/random.bin"
  fi
  if want restore; then
    id=$(first_id)
    rm -rf "$TMPFS/restore"
    timed "$tool" restore rs "$id" "$TMPFS/restore"
    rm -rf "$TMPFS/restore"
  fi
  # Issue 5: every byte of every pack read and verified (linux/, its increment and random.bin).
  want check && timed "$tool" check-read-data ck
  want mount && mount_bench "$tool" "$R"
  if want stage && [ "$tool" = cairn ]; then stage_bench; fi
done
rm -rf "$WORK"
umount "$TMPFS" 2>/dev/null || true

python3 - "$RESULTS" "${RESULTS_MD:-$HERE/results.md}" <<'PY'
import sys, collections, platform, subprocess, datetime
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
tools = list(dict.fromkeys(r[0] for r in rows))
steps = ["first-backup", "unchanged", "increment", "random.bin", "restore", "check-read-data",
         "stage-rsync-linux", "stage-rsync-linux-edit",
         "mount-cat-random.bin", "mount-cp-a-linux", "mount-random-4k"]
val = {(r[0], r[1]): (r[2], r[3]) for r in rows}
def cell(t, step):
    if (t, step) not in val:
        return "–"
    secs, mb = val[(t, step)]
    runs = val.get((t, step + "-runs"), ("",))[0].split()
    if len(runs) > 1:
        return f"{secs} (runs {', '.join(runs)})"
    return secs if mb == "-" else f"{secs} / {mb}"
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
out = [f"Measured {datetime.date.today()} on {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, "
       f"Linux {platform.release()}; repositories and data on the same disk; each mount row reads its repository into the page cache first.", "",
       "| step | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
for step in steps:
    out.append(f"| {step} (s / peak MB) | " + " | ".join(cell(t, step) for t in tools) + " |")
out.append("| repository after first backup (MB) | " + " | ".join(val.get((t, "repo-size-MB"), ("–",))[0] for t in tools) + " |")
for key, label in [("random-4k-median-ms", "mount: random 4 KiB read, median (ms)"),
                   ("random-4k-p99-ms", "mount: random 4 KiB read, p99 (ms)"),
                   ("mount-cat-random.bin-rss-MB", "mount: peak RSS while streaming random.bin (MB)"),
                   ("mount-cp-a-linux-rss-MB", "mount: peak RSS during cp -a (MB)")]:
    out.append(f"| {label} | " + " | ".join(val.get((t, key), ("–",))[0] for t in tools) + " |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
