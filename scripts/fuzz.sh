#!/usr/bin/env bash
# Runs the libFuzzer targets long, on their committed seed corpora:
#   scripts/fuzz.sh [NAME...] [-- libFuzzer flags]
# NAME is router, fs_path, codec, envelope or token (all when none is given);
# SECONDS_EACH (default 600) is each one's -max_total_time; JOBS the build parallelism.
# Builds build-asan (clang-14, TICKTOCK_FUZZ=ON) like scripts/sanitize.sh
# address. New inputs go to build-asan/fuzz/work/NAME/new, crashes to
# build-asan/fuzz/work/NAME/ (crash-*, leak-*, timeout-*): add a reproducer to
# the corpus and a regression test when you fix one.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-asan}
names=()
while (($#)) && [[ "$1" != "--" ]]; do names+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
((${#names[@]})) || names=(router fs_path codec envelope token)
export CCACHE_DIR=${CCACHE_DIR:-$PWD/.ccache}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTICKTOCK_BUILD_BENCH=OFF \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 -DTICKTOCK_FUZZ=ON -DTICKTOCK_SANITIZE=
cmake --build "$build" -j "${JOBS:-$(nproc)}" --target "${names[@]/%/_fuzz}"
for n in "${names[@]}"; do
  work="$build/fuzz/work/$n"
  mkdir -p "$work/new"
  leaks=1
  [[ "$n" == router || "$n" == envelope ]] && leaks=0  # their node lives until exit
  echo "fuzz: $n for ${SECONDS_EACH:-600} s"
  ASAN_OPTIONS=detect_leaks=$leaks "$build/fuzz/${n}_fuzz" -max_total_time="${SECONDS_EACH:-600}" \
    -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$work/" "$@" \
    "$work/new" "fuzz/corpus/$n"
done
