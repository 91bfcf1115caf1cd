#!/usr/bin/env bash
# Builds the libFuzzer targets (CMake preset fuzz: clang, ASan + UBSan, in
# build-fuzz/) and runs each for a bounded time over its corpus.
#
#   tools/fuzz/run.sh                     every target, 60 s each
#   tools/fuzz/run.sh --seconds 600 image_decode safetensors
#
# New inputs go to a scratch directory, never into tests/fuzz/corpus (copy
# one there by hand when it is worth keeping). A crash leaves its input in
# build-fuzz/findings/ and fails the run: add it to the target's corpus
# (fuzz.replay.* then replays it in every build) and write a unit test.
# Exits 77 (skipped) where clang has no libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=60
targets=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --seconds=*) seconds=${1#*=}; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [[ ${#targets[@]} -eq 0 ]]; then
  for source in tests/fuzz/fuzz_*.cc; do
    name=$(basename "$source" .cc)
    targets+=("${name#fuzz_}")
  done
fi

probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' \
  >"$probe/probe.cc"
if ! command -v clang++ >/dev/null ||
    ! clang++ -fsanitize=fuzzer,address "$probe/probe.cc" -o "$probe/probe" \
      2>/dev/null; then
  echo "SKIP: clang++ with libFuzzer not found (Debian: clang, libclang-rt-dev)"
  exit 77
fi

echo "== building the fuzz targets (preset fuzz, build-fuzz/)"
cmake --preset fuzz >"$probe/configure.log" 2>&1 ||
  { cat "$probe/configure.log"; exit 1; }
cmake --build build-fuzz -j"$(nproc)" --target ldmserve_fuzzers \
  >"$probe/build.log" 2>&1 || { tail -50 "$probe/build.log"; exit 1; }

mkdir -p build-fuzz/findings
failed=()
for target in "${targets[@]}"; do
  binary=build-fuzz/tests/fuzz/fuzz_$target
  corpus=tests/fuzz/corpus/$target
  [[ -x $binary && -d $corpus ]] || { echo "no target $target"; exit 2; }
  scratch=$(mktemp -d -p "$probe")
  echo "== $target: ${seconds} s over $(ls "$corpus" | wc -l) corpus inputs"
  if ! "$binary" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 \
      -artifact_prefix="build-fuzz/findings/$target-" -print_final_stats=1 \
      "$scratch" "$corpus" >"$probe/$target.log" 2>&1; then
    tail -60 "$probe/$target.log"
    failed+=("$target")
    continue
  fi
  grep -E "^stat::number_of_executed_units|^Done [0-9]+ runs" \
    "$probe/$target.log" | tr '\n' ' '
  echo
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FAIL: findings in ${failed[*]} (inputs in build-fuzz/findings/)"
  exit 1
fi
echo "PASS: ${#targets[@]} targets, ${seconds} s each, no finding"
