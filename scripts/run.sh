#!/usr/bin/env bash
# Sets everything up, builds, and starts ticktockd with the demo agents on an
# embedded RocksDB in ./ticktock-data. Stop it with Ctrl-C (it drains and exits 0).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Only the server and the CLI: the tests are test.sh's to build.
TARGETS="ticktockd ticktock" ./scripts/build.sh
exec "./${BUILD_DIR:-build}/tools/ticktockd" --data ./ticktock-data --demo "$@"
