#!/usr/bin/env bash
# Issue 25's rows: what parity costs and what healing takes, same machine, interleaved rounds
# (ROUNDS, default 3; the median shown with every run):
#   first backup of linux/ into a fresh repository with parity (the default) and with
#   `init --parity off`: wall time, and the repository's size;
#   `check --read-data` of each (with parity it reads the parity objects too);
#   heal throughput: `cairn scrub` of the parity repository, sound and after every pack lost a
#   sector in 80 (zeroed; within each pack's parity), in MB of packs healed per second of the
#   whole scrub (read, verified, rebuilt, proven by its hash, written back) and of the time
#   beyond the sound scrub's (what healing adds) — that repository copied to a tmpfs, so the
#   rows measure the heal, not the disk (which writes ~250 MB/s with fsync here);
#   a mount read: `cat` of an 8 MiB file (one pack) through a fresh mount, its pack sound
#   against damaged (20 zeroed sectors), with the bytes the mount read from the store.
# Repositories are on the disk, as in bench/run.sh. Writes bench/parity-results.md.
#
#   bash bench/parity.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../shared/bench}
DATA=${BENCH_DATA:-/tmp/cairn-bench-data}
SCRATCH=${BENCH_SCRATCH:-/tmp/cairn-bench-parity}
ROUNDS=${ROUNDS:-3}
[ -d "$DATA/linux" ] || BENCH_DATA=$DATA bash "$SHARED/prepare-data.sh"
(cd "$HERE/.." && cargo build --release --quiet)
CAIRN="$HERE/../target/release/cairn"
export CAIRN_PASSWORD=bench
rm -rf "$SCRATCH"; mkdir -p "$SCRATCH/mnt"
trap 'umount -l "$SCRATCH/mnt" 2>/dev/null; true' EXIT
RESULTS="$SCRATCH/results.tsv"; : > "$RESULTS"
settle() {
  python3 -c "b=bytearray(3<<30)"; sync
  find "$DATA/linux" -type f -exec cat {} + > /dev/null
}
# record STEP VALUE [EXTRA]
record() { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >> "$RESULTS"; printf '%-16s %10s %s\n' "$1" "$2" "${3:-}"; }
seconds() { python3 -c "print(f'{$2 - $1:.3f}')"; }
packs_bytes() { find "$1/data" -type f -printf '%s\n' | awk '{s+=$1} END {print s}'; }
# damage REPO EVERY [MAX]: zeroes one sector in EVERY of each pack (at most MAX per pack).
damage() {
  python3 - "$1" "$2" "${3:-1000000}" <<'PY'
import os, sys
root, every, most = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d, _, files in os.walk(os.path.join(root, "data")):
    for f in files:
        p = os.path.join(d, f); os.chmod(p, 0o600)
        b = bytearray(open(p, "rb").read())
        n = (len(b) + 4095) // 4096
        for k, s in enumerate(range(every // 2, n, every)):
            if k >= most: break
            b[s * 4096:(s + 1) * 4096] = bytes(min(4096, len(b) - s * 4096))
        open(p, "wb").write(b)
PY
}

# One pack's file for the mount rows, its repository kept sound in a copy.
head -c $((8 << 20)) "$DATA/random.bin" > "$SCRATCH/file.bin"
"$CAIRN" -q -r "$SCRATCH/repo-mount" init
"$CAIRN" -q -r "$SCRATCH/repo-mount" backup "$SCRATCH/file.bin"
cp -a "$SCRATCH/repo-mount" "$SCRATCH/repo-mount-sound"

# mount_row STEP: cat of the file through a fresh mount of repo-mount.
mount_row() {
  "$CAIRN" -r "$SCRATCH/repo-mount" --stats mount "$SCRATCH/mnt" > /dev/null 2> "$SCRATCH/mount.log" &
  local pid=$!
  for _ in $(seq 200); do mountpoint -q "$SCRATCH/mnt" && break; sleep 0.05; done
  sync; echo 3 > /proc/sys/vm/drop_caches
  cat "$SCRATCH/repo-mount"/data/*/* > /dev/null
  local start; start=$(date +%s.%N)
  cat "$SCRATCH/mnt/latest/file.bin" | cmp - "$SCRATCH/file.bin"
  local end; end=$(date +%s.%N)
  kill -TERM "$pid"; wait "$pid" || true
  record "$1" "$(seconds "$start" "$end")" "$(grep -o 'store: .*' "$SCRATCH/mount.log" | tail -1)"
}

for round in $(seq "$ROUNDS"); do
  echo "round $round"
  order="on off"; [ $((round % 2)) = 0 ] && order="off on"
  for mode in $order; do
    repo="$SCRATCH/repo-$mode"
    rm -rf "$repo"; "$CAIRN" -q -r "$repo" init --parity "$mode"
    settle
    /usr/bin/time -f "%e" -o "$SCRATCH/time" "$CAIRN" -q -r "$repo" backup "$DATA/linux" > /dev/null
    record "backup-$mode" "$(cat "$SCRATCH/time")" "$(du -sb "$repo" | cut -f1)"
  done
  for mode in $order; do
    repo="$SCRATCH/repo-$mode"
    cat "$repo"/*/*/* > /dev/null 2>&1 || true
    /usr/bin/time -f "%e" -o "$SCRATCH/time" "$CAIRN" -q -r "$repo" check --read-data > /dev/null
    record "check-$mode" "$(cat "$SCRATCH/time")"
  done
  # On a tmpfs: writing 265 MB back and syncing it costs this VM's disk ~1 s on its own.
  RAMREPO=/dev/shm/cairn-bench-parity-scrub
  rm -rf "$RAMREPO"; cp -a "$SCRATCH/repo-on" "$RAMREPO"
  bytes=$(packs_bytes "$RAMREPO")
  start=$(date +%s.%N)
  env -u CAIRN_PASSWORD "$CAIRN" -q -r "$RAMREPO" scrub > "$SCRATCH/scrub.out"
  end=$(date +%s.%N)
  record scrub-sound "$(seconds "$start" "$end")" "$bytes"
  damage "$RAMREPO" 80
  start=$(date +%s.%N)
  env -u CAIRN_PASSWORD "$CAIRN" -q -r "$RAMREPO" scrub > "$SCRATCH/scrub.out"
  end=$(date +%s.%N)
  rm -rf "$RAMREPO"
  record scrub-heal "$(seconds "$start" "$end")" "$bytes $(tail -1 "$SCRATCH/scrub.out")"

  for state in sound damaged; do
    rm -rf "$SCRATCH/repo-mount"; cp -a "$SCRATCH/repo-mount-sound" "$SCRATCH/repo-mount"
    [ "$state" = damaged ] && damage "$SCRATCH/repo-mount" 100 20
    mount_row "mount-$state"
  done
done

python3 - "$RESULTS" "$HERE/parity-results.md" "$ROUNDS" <<'PY'
import sys, statistics, collections, datetime, platform
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    step, value, extra = line.rstrip("\n").split("\t")
    rows[step].append((float(value), extra))
med = lambda step: statistics.median(v for v, _ in rows[step])
runs = lambda step: ", ".join(f"{v:.2f}" for v, _ in rows[step])
size = lambda step: statistics.median(int(e) for _, e in rows[step]) / 1e6
size_ratio = statistics.median(int(a[1]) / int(b[1]) for a, b in zip(rows["backup-on"], rows["backup-off"]))
heal_mb = statistics.median(int(e.split()[0]) / 1e6 / v for v, e in rows["scrub-heal"])
heal_only = statistics.median(int(e.split()[0]) / 1e6 / (v - s) for (v, e), (s, _) in zip(rows["scrub-heal"], rows["scrub-sound"]))
out = [f"Measured {datetime.date.today()}, Linux {platform.release()}, {sys.argv[3]} interleaved rounds, "
       "median (every run). Repositories on disk.", "",
       "| row | parity on | parity off | on / off | target |", "|---|---|---|---|---|",
       f"| first backup of linux/, s | {med('backup-on'):.2f} ({runs('backup-on')}) | {med('backup-off'):.2f} ({runs('backup-off')}) | {med('backup-on')/med('backup-off'):.3f} | ≤ 1.03 |",
       f"| repository size, MB | {size('backup-on'):.1f} | {size('backup-off'):.1f} | {size_ratio:.3f} (per round) | ≤ 1.03 |",
       f"| check --read-data, s | {med('check-on'):.2f} ({runs('check-on')}) | {med('check-off'):.2f} ({runs('check-off')}) | {med('check-on')/med('check-off'):.3f} | ≤ 1.05 |",
       "", "| row | value | target |", "|---|---|---|",
       f"| `scrub` of the sound repository (on a tmpfs), s | {med('scrub-sound'):.2f} ({runs('scrub-sound')}) | |",
       f"| `scrub` after every pack lost a sector in 80 (on a tmpfs), s | {med('scrub-heal'):.2f} ({runs('scrub-heal')}); {rows['scrub-heal'][-1][1].split(' ', 1)[1]} | |",
       f"| heal throughput: MB of packs per s of the scrub, whole / beyond the sound scrub's time | {heal_mb:.0f} / {heal_only:.0f} | ≥ 250 |",
       f"| mount: cat of an 8 MiB file, its pack sound, s | {med('mount-sound'):.3f} ({runs('mount-sound')}); {rows['mount-sound'][-1][1]} | |",
       f"| mount: the same, its pack damaged (20 sectors), s | {med('mount-damaged'):.3f} ({runs('mount-damaged')}); {rows['mount-damaged'][-1][1]} | ≤ sound + 0.1, one extra pack read |",
       ]
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
