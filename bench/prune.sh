#!/usr/bin/env bash
# Issue 14's rows: forget and prune against restic, and a backup running beside a prune.
#
# A repository of 20 snapshots of the benchmark trees in turns (linux/, linux-edit/, random.bin;
# linux/ and linux-edit/ backed up from one working copy, so they are one group of 14 and
# random.bin one of 6), built alike for cairn and restic. Then, on copies of it:
#   forget-prune    `forget --keep-last 3 --prune`, alone (wall time, peak RSS)
#   backup-alone    a backup of linux/ that reads every file again (`--force`), alone
#   backup-during   the same backup started together with `forget --keep-last 3 --prune`
# Writes bench/prune-results.md.
#
#   bash bench/prune.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
DATA=${BENCH_DATA:-/tmp/cairn-bench-data}
SCRATCH=${BENCH_SCRATCH:-/tmp/cairn-bench-prune}
[ -d "$DATA/linux-edit" ] || BENCH_DATA=$DATA bash "$SHARED/prepare-data.sh"
command -v restic >/dev/null || bash "$SHARED/install-peers.sh" --no-rustic
(cd "$HERE/.." && cargo build --release --quiet)
CAIRN="$HERE/../target/release/cairn"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
rm -rf "$SCRATCH"; mkdir -p "$SCRATCH"
RESULTS="$SCRATCH/results.tsv"; : > "$RESULTS"
settle() { python3 -c "b=bytearray(3<<30)"; sync; }

# timed TOOL STEP CMD...: wall seconds and peak RSS (MB) of CMD.
timed() {
  local tool=$1 step=$2; shift 2
  local out="$SCRATCH/time.$tool.$step"
  /usr/bin/time -f "%e %M" -o "$out" bash -c '"$@"' _ "$@" > "$SCRATCH/log.$tool.$step" 2>&1 ||
    { echo "$tool $step failed:"; tail -5 "$SCRATCH/log.$tool.$step"; return 1; }
  read -r secs kb < "$out"
  printf '%s\t%s\t%s\t%s\n' "$tool" "$step" "$secs" "$((kb / 1024))" >> "$RESULTS"
  printf '%-7s %-16s %7.2f s %6d MB\n' "$tool" "$step" "$secs" "$((kb / 1024))"
}

WORK="$SCRATCH/work"
for tool in ${TOOLS:-cairn restic}; do
  R="$SCRATCH/repo-$tool"
  case $tool in
    cairn)
      "$CAIRN" -q -r "$R" init
      b() { "$CAIRN" -q -r "$1" backup "${@:2}"; }
      forget_prune() { "$CAIRN" -q -r "$1" forget --keep-last 3 --prune; }
      force=--force ;;
    restic)
      restic -q -r "$R" init
      b() { restic -q -r "$1" backup "${@:2}"; }
      forget_prune() { restic -q -r "$1" forget --keep-last 3 --prune; }
      force=--force ;;
  esac
  export CAIRN
  export -f b forget_prune
  rm -rf "$WORK"; mkdir -p "$WORK"
  for i in $(seq 0 19); do
    case $((i % 3)) in
      0) rsync -a --delete "$DATA/linux/" "$WORK/linux/"; b "$R" "$WORK/linux" ;;
      1) rsync -a --delete "$DATA/linux-edit/" "$WORK/linux/"; b "$R" "$WORK/linux" ;;
      2) b "$R" "$DATA/random.bin" ;;
    esac
  done
  echo "$tool: 20 snapshots, $(du -sm "$R" | cut -f1) MB"
  cp -a "$R" "$R.alone"; cp -a "$R" "$R.during"
  settle
  timed "$tool" forget-prune forget_prune "$R"
  printf '%s\t%s\t%s\t%s\n' "$tool" repo-MB-after "$(du -sm "$R" | cut -f1)" - >> "$RESULTS"
  rsync -a --delete "$DATA/linux/" "$WORK/linux/"
  settle
  timed "$tool" backup-alone b "$R.alone" "$force" "$WORK/linux"
  settle
  forget_prune "$R.during" > "$SCRATCH/log.$tool.prune-during" 2>&1 &
  prune_pid=$!
  # restic's prune holds an exclusive lock: its backup is refused, which the table says.
  timed "$tool" backup-during b "$R.during" "$force" "$WORK/linux" ||
    printf '%s\t%s\t%s\t%s\n' "$tool" backup-during "refused: $(grep -m1 -o 'locked[^,]*' "$SCRATCH/log.$tool.backup-during" || echo failed)" - >> "$RESULTS"
  wait "$prune_pid" || true
  rm -rf "$R" "$R.alone" "$R.during"
done
rm -rf "$WORK"

python3 - "$RESULTS" "${RESULTS_MD:-$HERE/prune-results.md}" <<'PY'
import sys, datetime, subprocess, platform
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
val = {(r[0], r[1]): (r[2], r[3]) for r in rows}
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
def cell(t, s):
    if (t, s) not in val: return "–"
    secs, mb = val[(t, s)]
    return secs if mb == "-" else f"{secs} / {mb}"
out = [f"Measured {datetime.date.today()} on {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, Linux {platform.release()}.", "",
       "| step (s / peak MB) | cairn | restic |", "|---|---|---|"]
for step, label in [("forget-prune", "`forget --keep-last 3 --prune`, 20 snapshots"),
                    ("backup-alone", "backup of linux/ (`--force`), alone"),
                    ("backup-during", "the same backup beside `forget --keep-last 3 --prune`")]:
    out.append(f"| {label} | {cell('cairn', step)} | {cell('restic', step)} |")
out.append(f"| repository after the prune (MB) | {val.get(('cairn','repo-MB-after'),('–',))[0]} | {val.get(('restic','repo-MB-after'),('–',))[0]} |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
