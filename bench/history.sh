#!/usr/bin/env bash
# Many snapshots: listing, mounting, browsing history, find and diff over a long history.
#
# A tree of 100,000 small files shaped like a home directory (50 directories of 99
# subdirectories of 20 files, plus big/ with 1,000 files; 200 B to 4 KiB of pseudo-random
# content, the same on every run) is backed up 1,000 times into a cairn repository and, when
# restic is installed, a restic one. Before each backup 100 files (0.1 %) are rewritten, the
# way people work: 20 in each of 5 directories chosen pseudo-randomly; every 10th snapshot one
# file of big/ changes; every 5th one file is deleted and every 7th the oldest deleted one comes
# back; d000/s00/f000000 is in every snapshot and changes every 10th (100 versions). File
# names are unique (f + its number), so `find` of one name finds one path.
# One python3 process edits the tree and runs the backups (cairn's and restic's side by side,
# HISTORY_PARALLEL=0 for one after the other). A repository that already has its snapshots is
# kept, so the measurements can be re-run; an interrupted generation resumes (the tree is
# regenerated and the edits replayed).
#
# Then, each once (wall time and peak RSS from /usr/bin/time; a failing step is a "failed" row):
#   snapshots      `snapshots`, all of them printed
#   mount rows     a fresh `mount --cache-size 256MiB`: until it is in /proc/mounts, `ls
#                  snapshots/`, `cat latest/tree/d025/s49/f050490`, `ls
#                  history/tree/d000/s00/f000000/` (cairn only), `ls history/tree/big/` (1,000
#                  entries; cairn only); the RSS of these rows is the mount process's VmHWM
#                  after the step
#   find           `find f050490` over every snapshot
#   diff           `diff` of the last two snapshots
# Writes bench/history-results.md.
#
#   bash bench/history.sh
#   HISTORY_SNAPSHOTS=5 HISTORY_DIRS=4 HISTORY_BIG=100 CAIRN=/tmp/cairn bash bench/history.sh
#
# Environment: CAIRN (binary; else target/release/cairn, built first), HISTORY_WORK (work
# directory, /tmp/cairn-history-bench), HISTORY_SNAPSHOTS (1000), HISTORY_DIRS (50),
# HISTORY_BIG (1000: files in big/), HISTORY_CHANGES (files rewritten per snapshot, 0.1 % of all),
# HISTORY_RESTIC (0: cairn only), HISTORY_PARALLEL (1), HISTORY_CACHE_MIB (256),
# HISTORY_TIMEOUT (1200: seconds before a measured step is stopped), HISTORY_SETTLE and
# HISTORY_WARM (1: before each step touch and free 3 GiB, and read the repository into the page
# cache, as run.sh does), HISTORY_REGENERATE=1 (start afresh), RESULTS_MD (where the table goes).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(realpath -m "${HISTORY_WORK:-/tmp/cairn-history-bench}")
N=${HISTORY_SNAPSHOTS:-1000}
DIRS=${HISTORY_DIRS:-50}
SUBDIRS=99
PER_LEAF=20
BIG=${HISTORY_BIG:-1000}
PER_DIR=$((SUBDIRS * PER_LEAF))
CHANGES=${HISTORY_CHANGES:-$(( (DIRS * PER_DIR + BIG + 500) / 1000 ))}
[ "$CHANGES" -ge 1 ] || CHANGES=1
CACHE_MIB=${HISTORY_CACHE_MIB:-256}
TIMEOUT=${HISTORY_TIMEOUT:-1200}
for v in N DIRS PER_DIR CHANGES CACHE_MIB TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$v=${!v}: not a number" >&2; exit 1; }
done
if [ -z "${CAIRN:-}" ]; then
  (cd "$HERE/.." && cargo build --release --quiet)
  CAIRN="$HERE/../target/release/cairn"
fi
CAIRN=$(realpath "$CAIRN")
TOOLS=cairn
if [ "${HISTORY_RESTIC:-1}" != 0 ] && command -v restic >/dev/null; then TOOLS="cairn restic"; fi
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench

TREE="$WORK/tree"                 # shown in the mount as latest/tree/...
TREE_NAME=$(basename "$TREE")
MNT="$WORK/mnt"
LOGS="$WORK/logs"
mkdir -p "$WORK" "$MNT"
[ "${HISTORY_REGENERATE:-0}" != 1 ] || rm -rf "$TREE" "$WORK/repo-cairn" "$WORK/repo-restic" "$WORK/params.json"
rm -rf "$LOGS"; mkdir -p "$LOGS"
# A mount left behind by an interrupted run.
! awk -v m="$MNT" '$2 == m {f=1} END {exit !f}' /proc/mounts || fusermount3 -u "$MNT" || fusermount3 -uz "$MNT"
RESULTS="$LOGS/results.tsv"; : > "$RESULTS"
# The files the rows read: KEY is in every snapshot, TARGET in the middle of the tree (never
# deleted), BIGDIR has BIG entries.
KEY=d000/s00/f000000
BIGDIR=big
TARGET=$(printf 'd%03d/s%02d/f%06d' $((DIRS / 2)) $((SUBDIRS / 2)) \
  $(( ((DIRS / 2) * SUBDIRS + SUBDIRS / 2) * PER_LEAF + PER_LEAF / 2 )))
PATTERN=$(basename "$TARGET")

# 1. Generation (skipped when every repository already has its N snapshots).
WORK=$WORK TREE=$TREE N=$N DIRS=$DIRS SUBDIRS=$SUBDIRS PER_LEAF=$PER_LEAF BIG=$BIG CHANGES=$CHANGES \
TOOLS=$TOOLS CAIRN=$CAIRN \
PARALLEL=${HISTORY_PARALLEL:-1} python3 - <<'PY'
import json, os, random, shutil, statistics, subprocess, sys, threading, time

E = os.environ
work, tree, cairn = E["WORK"], E["TREE"], E["CAIRN"]
n, dirs, changes = int(E["N"]), int(E["DIRS"]), int(E["CHANGES"])
subdirs, per_leaf, big = int(E["SUBDIRS"]), int(E["PER_LEAF"]), int(E["BIG"])
tools, parallel = E["TOOLS"].split(), E["PARALLEL"] != "0"
SEED, KEY_EVERY, DELETE_EVERY, RECREATE_EVERY, SIZE_MIN, SIZE_MAX = 1, 10, 5, 7, 200, 4096
CLUSTERS, BIG_EVERY = 5, 10
params = {"dirs": dirs, "subdirs": subdirs, "per_leaf": per_leaf, "big": big, "changes": changes,
          "seed": SEED, "key_every": KEY_EVERY, "delete_every": DELETE_EVERY,
          "recreate_every": RECREATE_EVERY, "clusters": CLUSTERS, "big_every": BIG_EVERY,
          "sizes": [SIZE_MIN, SIZE_MAX], "format": 2}
repos = {t: os.path.join(work, "repo-" + t) for t in ("cairn", "restic")}
leaves = dirs * subdirs
names = [f"d{(i // per_leaf) // subdirs:03d}/s{(i // per_leaf) % subdirs:02d}/f{i:06d}"
         for i in range(leaves * per_leaf)]
names += [f"big/f{i:06d}" for i in range(len(names), len(names) + big)]
key = 0                                          # d000/s00/f000000
target = ((dirs // 2) * subdirs + subdirs // 2) * per_leaf + per_leaf // 2   # never deleted
protected = {key, target}
if changes > len(names) - 2 - n // DELETE_EVERY:
    sys.exit(f"HISTORY_CHANGES={changes} is too many for {len(names)} files")

def run(cmd, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)

def count(tool):
    """Snapshots in the tool's repository; None when there is none (or it does not open)."""
    r = repos[tool]
    if not os.path.isdir(r) or not os.listdir(r):
        return None
    if tool == "cairn":
        p = run([cairn, "-r", r, "snapshots", "--json"])
    else:
        run(["restic", "-q", "-r", r, "unlock"])  # a generation killed mid-backup leaves a lock
        p = run(["restic", "-r", r, "snapshots", "--json"])
    if p.returncode != 0:
        print(f"{tool}: {r} does not list its snapshots, made again: {p.stderr.strip()[:300]}")
        return None
    return len(json.loads(p.stdout) or [])

def init(tool):
    r = repos[tool]
    shutil.rmtree(r, ignore_errors=True)
    cmd = ([cairn, "-q", "-r", r, "init", "--kdf-time", "1", "--kdf-memory", "1"]
           if tool == "cairn" else ["restic", "-q", "-r", r, "init"])
    p = run(cmd)
    if p.returncode != 0:
        sys.exit(f"{tool} init failed: {p.stderr}")

stamp = os.path.join(work, "params.json")
same = os.path.exists(stamp) and json.load(open(stamp)) == params
counts = {}
for t in tools:
    c = count(t) if same else None
    if c is None or c > n:
        init(t)
        c = 0
    counts[t] = c
expected = {"versions": 1 + (n - 1) // KEY_EVERY, "snapshots": n}
json.dump(expected, open(os.path.join(work, "expected.json"), "w"))
if all(c == n for c in counts.values()):
    print(f"repositories have their {n} snapshots: not generated again")
    sys.exit(0)
json.dump(params, open(stamp, "w"))

def content(rng):
    return rng.randbytes(rng.randint(SIZE_MIN, SIZE_MAX))

def write(i, data):
    with open(os.path.join(tree, names[i]), "wb") as f:
        f.write(data)

t0 = time.monotonic()
shutil.rmtree(tree, ignore_errors=True)
for d in {os.path.dirname(name) for name in names}:
    os.makedirs(os.path.join(tree, d))
rng = random.Random(SEED)
for i in range(len(names)):
    write(i, content(rng))
print(f"tree of {len(names)} files generated in {time.monotonic() - t0:.1f} s; "
      f"snapshots so far: {counts}", flush=True)

deleted = []          # deleted files, oldest first
def edit(s):
    """The edits before snapshot s (s >= 1); the same for every run."""
    rng = random.Random(SEED * 1_000_003 + s)
    gone = set(deleted)
    picked = set()
    per_cluster = max(1, min(per_leaf, changes // CLUSTERS))
    while len(picked) < changes:
        leaf = rng.randrange(leaves)
        files = range(leaf * per_leaf, (leaf + 1) * per_leaf)
        for i in rng.sample(files, per_cluster):
            if i not in protected and i not in gone and len(picked) < changes:
                picked.add(i)
    if s % BIG_EVERY == 0 and big:
        picked.add(leaves * per_leaf + rng.randrange(big))
    for i in sorted(picked):
        write(i, content(rng))
    if s % KEY_EVERY == 0:
        write(key, content(rng))
    if s % DELETE_EVERY == 0:
        while True:
            i = rng.randrange(len(names))
            if i not in protected and i not in gone and i not in picked:
                break
        os.remove(os.path.join(tree, names[i]))
        deleted.append(i)
    if s % RECREATE_EVERY == 0 and len(deleted) >= 3:
        write(deleted.pop(0), content(rng))

def backup(tool, secs):
    r = repos[tool]
    cmd = ([cairn, "-r", r, "backup", "-q", tree] if tool == "cairn"
           else ["restic", "-r", r, "backup", "-q", tree])
    start = time.monotonic()
    p = run(cmd)
    secs[tool] = time.monotonic() - start
    if p.returncode != 0:
        secs[tool] = None
        print(f"{tool} backup failed:\n{p.stderr}", file=sys.stderr)

times = {t: [] for t in tools}   # this run's backups, the first of each tool (a full read) left out
first = {t: True for t in tools}
window, backed_up = 50, 0
t0 = time.monotonic()
for s in range(n):
    if s >= 1:
        edit(s)
    due = [t for t in tools if counts[t] <= s]
    if not due:
        continue
    secs = {}
    if parallel and len(due) > 1:
        threads = [threading.Thread(target=backup, args=(t, secs)) for t in due]
        for th in threads: th.start()
        for th in threads: th.join()
    else:
        for t in due:
            backup(t, secs)
    if any(secs[t] is None for t in due):
        sys.exit(1)
    backed_up += 1
    for t in due:
        counts[t] += 1
        if first[t]:
            first[t] = False
        else:
            times[t].append(secs[t])
    if (s + 1) % window == 0 or s + 1 == n:
        el = time.monotonic() - t0
        recent = ", ".join(f"{t} {statistics.mean(times[t][-window:]):.2f} s" for t in tools if times[t])
        eta = el / backed_up * (n - s - 1)
        print(f"{s + 1}/{n} snapshots, {el:.0f} s elapsed, about {eta / 60:.0f} min to go; "
              f"mean backup of the last {window}: {recent}", flush=True)
with open(os.path.join(work, "gen-stats.tsv"), "w") as f:
    for t in tools:
        if times[t]:
            f.write(f"{t}\t{len(times[t])}\t{statistics.mean(times[t]):.3f}\t"
                    f"{statistics.median(times[t]):.3f}\t{int(parallel and len(tools) > 1)}\n")
print(f"generated in {time.monotonic() - t0:.0f} s; deleted at the end: {len(deleted)} files")
PY

# 2. Measurements.
settle() { [ "${HISTORY_SETTLE:-1}" = 0 ] || { python3 -c "b=bytearray(3<<30)"; sync; }; }
warm() { [ "${HISTORY_WARM:-1}" = 0 ] || find "$1" -type f -exec cat {} + > /dev/null; }
prepare() { settle; warm "$WORK/repo-$1"; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$RESULTS"; }

# timed TOOL STEP CMD...: runs CMD once and records wall seconds, peak RSS (MiB) and lines of
# output; with RSS_PID set, the RSS is that process's VmHWM after CMD. A failure is recorded as
# "failed", a step still running after HISTORY_TIMEOUT seconds is stopped; neither stops the script.
timed() {
  local tool=$1 step=$2; shift 2
  local t="$LOGS/time.$tool.$step" out="$LOGS/out.$tool.$step" err="$LOGS/err.$tool.$step"
  local rc=0
  /usr/bin/time -f "%e %M" -o "$t" timeout -k 10 "$TIMEOUT" "$@" > "$out" 2> "$err" || rc=$?
  if [ "$rc" = 0 ]; then
    local secs kb
    read -r secs kb < "$t"
    [ -z "${RSS_PID:-}" ] || kb=$(hwm "$RSS_PID")
    record "$tool" "$step" "$secs" "$((kb / 1024))" "$(wc -l < "$out")"
    printf '%-7s %-14s %8.2f s %6d MiB %8d lines\n' "$tool" "$step" "$secs" "$((kb / 1024))" "$(wc -l < "$out")"
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    record "$tool" "$step" "> $TIMEOUT (stopped)" - -
    echo "$tool $step stopped after $TIMEOUT s"
  else
    record "$tool" "$step" failed - -
    echo "$tool $step failed: $(head -c 300 "$err" | tr '\n' ' ')"
  fi
}
hwm() { { [ -r "/proc/$1/status" ] && awk '/^VmHWM:/ {print $2; f=1} END {if (!f) print 0}' "/proc/$1/status"; } || echo 0; }
mounted() { awk -v m="$1" '$2 == m {f=1} END {exit !f}' /proc/mounts; }

MOUNT_PID=
unmount() {
  if mounted "$MNT"; then fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" || true; fi
  if [ -n "$MOUNT_PID" ]; then
    for _ in $(seq 100); do kill -0 "$MOUNT_PID" 2>/dev/null || break; sleep 0.1; done
    kill "$MOUNT_PID" 2>/dev/null || true
    wait "$MOUNT_PID" 2>/dev/null || true
    MOUNT_PID=
  fi
}
trap unmount EXIT

# ids TOOL: the ids of the last two snapshots, oldest first.
ids() {
  local out="$LOGS/snapshots.$1.json"
  case $1 in
    cairn) "$CAIRN" -r "$WORK/repo-cairn" snapshots --json > "$out" 2>/dev/null || return 0 ;;
    restic) restic -r "$WORK/repo-restic" snapshots --json > "$out" 2>/dev/null || return 0 ;;
  esac
  python3 -c '
import json, re, sys
def key(s):  # RFC 3339 with up to 9 fractional digits
    m = re.match(r"(.{19})(\.\d+)?(.*)", s["time"])
    return (m.group(1) + m.group(3), float(m.group(2) or 0))
snaps = sorted(json.load(open(sys.argv[1])) or [], key=key)
print(" ".join(s["id"] for s in snaps[-2:]))' "$out"
}

MOUNT_STEPS="mount-ready ls-snapshots cat-latest history-file history-dir"
for tool in $TOOLS; do
  R="$WORK/repo-$tool"
  case $tool in
    cairn) cli=("$CAIRN" -r "$R")
      mount_cmd=("$CAIRN" -r "$R" mount --cache-size "${CACHE_MIB}MiB" "$MNT")
      latest="$MNT/latest/$TREE_NAME" history="$MNT/history/$TREE_NAME" ;;
    restic) cli=(restic -r "$R")
      mount_cmd=(restic -r "$R" mount "$MNT")
      latest="$MNT/snapshots/latest$TREE" history= ;;
  esac

  prepare "$tool"
  timed "$tool" open "${cli[@]}" cat config
  prepare "$tool"
  timed "$tool" snapshots "${cli[@]}" snapshots

  prepare "$tool"
  start=$(date +%s.%N)
  "${mount_cmd[@]}" > "$LOGS/log.$tool.mount" 2>&1 &
  MOUNT_PID=$!
  for _ in $(seq $((TIMEOUT * 20))); do
    mounted "$MNT" && break
    kill -0 "$MOUNT_PID" 2>/dev/null || break
    sleep 0.05
  done
  if mounted "$MNT"; then
    secs=$(python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$start")
    record "$tool" mount-ready "$secs" "$(( $(hwm "$MOUNT_PID") / 1024 ))" -
    echo "$tool mount-ready $secs s"
    RSS_PID=$MOUNT_PID timed "$tool" ls-snapshots ls "$MNT/snapshots"
    RSS_PID=$MOUNT_PID timed "$tool" cat-latest cat "$latest/$TARGET"
    if [ -n "$history" ]; then
      RSS_PID=$MOUNT_PID timed "$tool" history-file ls "$history/$KEY/"
      RSS_PID=$MOUNT_PID timed "$tool" history-dir ls "$history/$BIGDIR/"
    fi
    echo "$tool mount peak RSS (VmHWM): $(( $(hwm "$MOUNT_PID") / 1024 )) MiB"
  else
    echo "$tool mount failed: $(tail -3 "$LOGS/log.$tool.mount" | tr '\n' ' ')"
    for step in $MOUNT_STEPS; do
      [ "$tool" = cairn ] || [[ $step != history-* ]] || continue
      record "$tool" "$step" failed - -
    done
  fi
  unmount

  prepare "$tool"
  timed "$tool" find "${cli[@]}" find "$PATTERN"

  read -r -a last <<< "$(ids "$tool")"
  if [ "${#last[@]}" = 2 ]; then
    prepare "$tool"
    timed "$tool" diff "${cli[@]}" diff "${last[0]}" "${last[1]}"
  else
    record "$tool" diff failed - -
  fi
  record "$tool" repo-MiB "$(du -sm "$R" | cut -f1)" - -
done

restic_version=-
[[ " $TOOLS " != *" restic "* ]] || restic_version=$(restic version | cut -d' ' -f2)
python3 - "$RESULTS" "${RESULTS_MD:-$HERE/history-results.md}" "$WORK" "$N" "$DIRS" "$PER_DIR" \
  "$CHANGES" "$CACHE_MIB" "$TREE_NAME" "$KEY" "$BIGDIR" "$TARGET" "$PATTERN" "$restic_version" "$BIG" <<'PY'
import datetime, json, os, platform, subprocess, sys
(results, md, work, n, dirs, per, changes, cache, tree, key, bigdir, target, pattern,
 restic_version, bigfiles) = sys.argv[1:]
n, dirs, per, changes, cache, bigfiles = int(n), int(dirs), int(per), int(changes), int(cache), int(bigfiles)
rows = [l.rstrip("\n").split("\t") for l in open(results) if l.strip()]
val = {(r[0], r[1]): r[2:] for r in rows}
exp = json.load(open(os.path.join(work, "expected.json")))
gen = {}
if os.path.exists(os.path.join(work, "gen-stats.tsv")):
    for l in open(os.path.join(work, "gen-stats.tsv")):
        t, cnt, mean, median, par = l.split("\t")
        if (t, "snapshots") in val:  # a tool measured in this run
            gen[t] = (int(cnt), float(mean), float(median), par.strip() == "1")
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()

def secs(t, s):
    v = val.get((t, s))
    return "–" if v is None else v[0]
def rss(t, s):
    v = val.get((t, s))
    return "–" if v is None or v[1] == "-" else v[1]
def lines(t, s):
    v = val.get((t, s))
    return "–" if v is None or v[2] == "-" else v[2]

rss_cap = cache + 64
versions = f"{exp['versions']} version{'s' if exp['versions'] != 1 else ''}"
steps = [
    ("open", "open the repository (`cat config`)", None, None, False),
    ("snapshots", f"`snapshots` (all {n})", 1, None, True),
    ("mount-ready", f"fresh mount (`--cache-size {cache}MiB`): until mounted", None, None, False),
    ("ls-snapshots", "mount: `ls snapshots/`", 1, None, True),
    ("cat-latest", f"mount: `cat latest/{tree}/{target}`", 1, None, False),
    ("history-file", f"mount: `ls history/{tree}/{key}/` ({versions} expected)", 2, None, True),
    ("history-dir", f"mount: `ls history/{tree}/{bigdir}/` ({bigfiles:,} names)", 2, rss_cap, True),
    ("find", f"`find {pattern}` over all snapshots", 10, None, True),
    ("diff", "`diff` of the last two snapshots", 1, None, True),
]
out = [f"Measured {datetime.date.today()} on {cpu}, {cores} cores, Linux {platform.release()}; "
       f"restic {restic_version}. `bash bench/history.sh`: {n} snapshots of a tree of "
       f"{dirs * per + bigfiles:,} files ({dirs} directories of 99 of 20 files, and big/ of "
       f"{bigfiles:,}; 200 B to 4 KiB each), {changes} files rewritten before each backup (20 in each "
       f"of 5 directories, one in big/ every 10th), one deleted every 5th and the oldest deleted one "
       f"back every 7th; `{key}` in every snapshot, changed every 10th. Each step run once, the repository "
       f"read into the page cache first; the RSS of the mount rows is the mount process's peak "
       f"(VmHWM) after the step, its cache budget {cache} MiB. cairn's repositories are made with "
       f"`init --kdf-time 1 --kdf-memory 1`; restic's key derivation (its default) is in each of its "
       f"rows, as the first row shows.", "",
       "| step | cairn s | cairn peak RSS MiB | restic s | restic peak RSS MiB | output lines (cairn / restic) | target (cairn) |",
       "|---|---|---|---|---|---|---|"]
for step, label, tsecs, trss, show_lines in steps:
    target_cell = "–"
    if tsecs is not None:
        target_cell = f"< {tsecs} s" + (f", RSS ≤ {trss} MiB" if trss else "")
        s, r = secs("cairn", step), rss("cairn", step)
        if s.startswith(">"):
            target_cell += ": **missed**"
        elif s not in ("failed", "–"):
            met = float(s) < tsecs and (trss is None or (r != "–" and int(r) <= trss))
            target_cell += ": met" if met else ": **missed**"
    lc = f"{lines('cairn', step)} / {lines('restic', step)}" if show_lines else "–"
    out.append(f"| {label} | {secs('cairn', step)} | {rss('cairn', step)} | {secs('restic', step)} | "
               f"{rss('restic', step)} | {lc} | {target_cell} |")
if gen:
    par = any(g[3] for g in gen.values())
    def g(t):
        return f"{gen[t][1]:.2f} (median {gen[t][2]:.2f}, {gen[t][0]} backups)" if t in gen else "–"
    out.append(f"| backup of {changes} changed files, mean while generating"
               f"{' (both tools at once)' if par else ''} | {g('cairn')} | – | {g('restic')} | – | – | – |")
out.append(f"| repository size (MiB) | {secs('cairn', 'repo-MiB')} | – | {secs('restic', 'repo-MiB')} | – | – | – |")
open(md, "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
