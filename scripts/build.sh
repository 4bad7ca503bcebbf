#!/usr/bin/env bash
# Configures and builds ticktock into ${BUILD_DIR:-build}. Extra arguments go
# to CMake (e.g. -DTICKTOCK_SANITIZE=address,undefined). TARGETS (space
# separated) builds only those targets, e.g. TARGETS="ticktockd ticktock".
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
jobs=${JOBS:-$(nproc)}
export CCACHE_DIR=${CCACHE_DIR:-$PWD/.ccache}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} "$@"
# shellcheck disable=SC2086 # TARGETS is a list
cmake --build "$build" -j "$jobs" ${TARGETS:+--target $TARGETS}
