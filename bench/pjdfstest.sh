#!/usr/bin/env bash
# Issue 24: the POSIX file-system test suite (pjdfstest) run as root in a directory of the
# root file system, in an overlay stage and in a FUSE stage (--allow-other: the suite acts as
# other users), counting failures against the plain directory. Prints each failed test file
# and number; the README lists each difference with its reason. About 3 x 200 s.
#
#   bash bench/pjdfstest.sh            # clones pjdfstest into $WORK if missing
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${PJD_WORK:-/tmp/cairn-pjdfstest}
CAIRN="$HERE/../target/release/cairn"
(cd "$HERE/.." && cargo build --release --quiet)
mkdir -p "$WORK"
if [ ! -x "$WORK/pjdfstest/pjdfstest" ]; then
  [ -d "$WORK/pjdfstest" ] || git clone --quiet https://github.com/pjd/pjdfstest "$WORK/pjdfstest"
  # Built without autotools: the Linux feature macros configure would find.
  (cd "$WORK/pjdfstest" && touch config.h && gcc -O2 -D_GNU_SOURCE -o pjdfstest pjdfstest.c \
    -DHAVE_FCHMODAT -DHAVE_FCHOWNAT -DHAVE_FSTATAT -DHAVE_LINKAT -DHAVE_MKDIRAT -DHAVE_MKFIFOAT \
    -DHAVE_MKNODAT -DHAVE_OPENAT -DHAVE_POSIX_FALLOCATE -DHAVE_RENAMEAT -DHAVE_SYMLINKAT \
    -DHAVE_UNLINKAT -DHAVE_UTIMENSAT -DHAVE_STRUCT_STAT_ST_ATIM -DHAVE_STRUCT_STAT_ST_CTIM \
    -DHAVE_STRUCT_STAT_ST_MTIM -DHAVE_SYS_SYSMACROS_H)
fi
export CAIRN_PASSWORD=pjdfstest
suite() { # suite NAME DIR
  mkdir -p "$2/t"
  (cd "$2/t" && prove -r "$WORK/pjdfstest/tests" > "$WORK/$1.log" 2>&1) || true
  rm -rf "$2/t"
  printf '%-8s %s\n' "$1" "$(grep -E '^Files=|^Result' "$WORK/$1.log" | tr '\n' ' ')"
  grep -B1 'Failed test' "$WORK/$1.log" | grep -v '^--' | sed 's/^/    /' || true
}
rm -rf "$WORK/plain"; mkdir -p "$WORK/plain"
suite ext4 "$WORK/plain"
for kind in overlay fuse; do
  repo="$WORK/repo-$kind" mnt="$WORK/mnt-$kind"
  rm -rf "$repo"; mkdir -p "$mnt"
  "$CAIRN" -q -r "$repo" init
  extra=(); [ "$kind" = fuse ] && extra=(--fuse --allow-other)
  "$CAIRN" -q -r "$repo" stage "$mnt" --path /pjd --empty "${extra[@]}" &
  for _ in $(seq 200); do mountpoint -q "$mnt" && break; sleep 0.05; done
  suite "$kind" "$mnt"
  "$CAIRN" -q -r "$repo" stage --abort "$mnt"; wait
  rm -rf "$repo"
done
