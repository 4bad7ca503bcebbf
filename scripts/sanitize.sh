#!/usr/bin/env bash
# Configures, builds and tests a sanitizer tree (Debug, no bench):
#   scripts/sanitize.sh address   # ASan + UBSan + LeakSanitizer, every test in build-asan
#   scripts/sanitize.sh thread    # TSan: runtime, storage, actors and crash tests in build-tsan
# BUILD_DIR overrides the tree, JOBS the build parallelism; further arguments
# go to ctest (e.g. -R storage_tests). A sanitizer report fails its test.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-address}
shift || true
case "$mode" in
  address)
    sanitize=address,undefined
    build=${BUILD_DIR:-build-asan}
    select=() ;;
  thread)
    sanitize=thread
    build=${BUILD_DIR:-build-tsan}
    select=(-R '^(runtime_tests|storage_tests|actors_tests|crash_tests):') ;;
  *)
    echo "usage: $0 [address|thread] [ctest arguments...]" >&2
    exit 2 ;;
esac
export CCACHE_DIR=${CCACHE_DIR:-$PWD/.ccache}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTICKTOCK_SANITIZE="$sanitize" \
  -DTICKTOCK_BUILD_BENCH=OFF
cmake --build "$build" -j "${JOBS:-$(nproc)}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp}
# consumer-find-package installs and builds a separate project: not here.
ctest --test-dir "$build" --output-on-failure -j 1 -E '^consumer-find-package$' "${select[@]}" "$@"
