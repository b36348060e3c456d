#!/usr/bin/env bash
# A short run of every fuzz target, so CI proves they build and survive a few thousand inputs.
# Real fuzzing: `cargo fuzz run <target>` (needs cargo-fuzz; see README.md here).
set -euo pipefail
cd "$(dirname "$0")"
for target in pack_header index_segment tree snapshot key_file config prune_files dictionary; do
  mkdir -p "corpus/$target"
  printf '\001' > "corpus/$target/seed"
  "target/debug/$target" -runs=3000 -max_len=4096 "corpus/$target" >/dev/null 2>&1 ||
    { echo "fuzz target $target failed"; "target/debug/$target" -runs=3000 -max_len=4096 "corpus/$target" 2>&1 | tail -20; exit 1; }
done
echo "fuzz smoke: 8 targets x 3000 inputs ok"
