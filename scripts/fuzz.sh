#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (default 60 s each),
# growing the corpus kept in fuzz/corpus/<target>, then minimizes it.
# Not part of CI. The machine's toolchain is stable: RUSTC_BOOTSTRAP lets
# cargo-fuzz pass the sanitizer flags it needs.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(route token role_annotation namespace_policy cgroup_path)
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  echo "== fuzzing $target for ${seconds}s"
  cargo fuzz run "$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -max_len=4096 2>&1 \
    | grep -E "^(#[0-9]+\s+(DONE|INITED)|==[0-9]+==|SUMMARY|Done|artifact)" || true
  cargo fuzz cmin "$target" "fuzz/corpus/$target" >/dev/null 2>&1 || true
  echo "   corpus: $(ls "fuzz/corpus/$target" | wc -l) inputs"
done
