#!/usr/bin/env bash
# Sets everything up, builds, and runs every test with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
build=${BUILD_DIR:-build}
# Catch2 exits 0 when no test matches a name, so make sure the suites were
# really discovered before trusting a green run.
count=$(ctest --test-dir "$build" -N | sed -n 's/^Total Tests: //p')
min=${MIN_TESTS:-150}
if [[ -z "$count" || "$count" -lt "$min" ]]; then
  echo "test: only ${count:-0} tests discovered (expected at least $min)" >&2
  exit 1
fi
echo "test: running $count tests"
ctest --test-dir "$build" --output-on-failure -j "${JOBS:-2}" --timeout 600 "$@"
