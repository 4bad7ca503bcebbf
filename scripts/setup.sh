#!/usr/bin/env bash
# Installs the Debian 12 packages ticktock needs, when missing.
# Uses sudo when not run as root. Safe to run again.
set -euo pipefail

packages=(
  build-essential cmake pkg-config ninja-build ccache
  # the linker (CMakeLists.txt, TICKTOCK_LLD)
  lld
  libcaf-dev librocksdb-dev rocksdb-tools libsodium-dev capnproto libcapnp-dev catch2
  libsecp256k1-dev libboost1.81-dev libboost-json1.81-dev libboost-program-options1.81-dev
  libssl-dev python3 curl bubblewrap
  # tests/docs/openapi_lint_test.py; tests/e2e/openapi_check.py checks the
  # e2e suites' responses against docs/openapi.yaml
  python3-yaml python3-jsonschema
  # ticktockd's malloc (TICKTOCK_TCMALLOC)
  libgoogle-perftools-dev
  # scripts/sanitize.sh and scripts/fuzz.sh: clang with libFuzzer and the sanitizer runtimes
  clang-14 libclang-rt-14-dev
)

# Node.js and npm run the Nostr interop test (nostr-tools, installed by the
# test into the build tree). Use the machine's Node when it has one (Debian's
# own nodejs may be older than nostr-tools wants); else Debian's packages.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi

# tests/e2e/control_center_e2e_test.py: a real headless browser. Installed
# without its recommends (which would bring a desktop's services along).
browser_packages=(chromium)

# The packages of "$@" that are not installed.
not_installed() {
  local p status
  for p in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || echo "$p"
  done
}
mapfile -t missing < <(not_installed "${packages[@]}")
mapfile -t missing_browser < <(not_installed "${browser_packages[@]}")

if ((${#missing[@]} + ${#missing_browser[@]} == 0)); then
  echo "setup: all $((${#packages[@]} + ${#browser_packages[@]})) packages present"
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]} ${missing_browser[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "setup: installing ${missing[*]} ${missing_browser[*]}"
"${sudo[@]}" apt-get update -q
install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q)
if ((${#missing[@]})); then
  "${install[@]}" "${missing[@]}"
fi
if ((${#missing_browser[@]})); then
  "${install[@]}" --no-install-recommends "${missing_browser[@]}"
fi
