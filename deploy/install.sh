#!/usr/bin/env bash
# Installs everything ssmserve needs on Debian 12 (idempotent: apt runs only for missing
# packages) and builds it in Release into build/ (binaries in build/bin/).
#   deploy/install.sh [--no-build] [--no-test-deps] [--sanitizers]
# --no-build: packages only; --no-test-deps: without what only the tests and benchmarks need
# (a container image's builder); --sanitizers: also the sanitizer builds the whole test suite
# runs (tests/run-all.sh), build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer) and
# build-tsan/ (ThreadSanitizer), each with its tests and the binaries they start. The CUDA
# toolkit is never installed here; the CUDA backend is built only where nvcc exists.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
test_deps=1
sanitizers=0
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --no-test-deps) test_deps=0 ;;
    --sanitizers) sanitizers=1 ;;
    *) echo "install.sh: unknown option $arg (expected --no-build, --no-test-deps, --sanitizers)" >&2
       exit 2 ;;
  esac
done
if [ "$sanitizers" -eq 1 ] && { [ "$build" -eq 0 ] || [ "$test_deps" -eq 0 ]; }; then
  echo "install.sh: --sanitizers builds tests: it goes with neither --no-build nor --no-test-deps" >&2
  exit 2
fi

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates
  # libraries
  libeigen3-dev nlohmann-json3-dev libfmt-dev libcli11-dev libspdlog-dev
  libsndfile1-dev libsoxr-dev portaudio19-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler prometheus-cpp-dev
  libmicrohttpd-dev  # ssm-server's HTTP endpoint: /metrics and the web dashboard
  libssl-dev libhiredis-dev  # resume tokens and snapshot checksums; the Redis state store
)
test_packages=(
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev python3 python3-numpy python3-torch python3-grpcio
  prometheus yamllint python3-yaml
  espeak-ng sox  # speech clips: the ssm-mic tests, the speech-activity recipe and its test
  chromium  # the dashboard's browser test
  redis-server  # the state-store tests (started by the tests on free ports)
  clang libclang-rt-14-dev  # the libFuzzer targets (tests/fuzz), built with clang
  clang-format  # the formatting check (tests/lint)
)

[ "$test_deps" -eq 1 ] && packages+=("${test_packages[@]}")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null || missing+=(nodejs npm)  # Debian 12 ships Node.js 18: the browser test runs on it
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install.sh: installing ${missing[*]}" >&2
  $sudo apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}"
fi

# The web dashboard's npm packages at the versions of its package-lock.json (uPlot, embedded
# into ssm-server; playwright-core for the browser test); skipped when already installed.
dashboard=clients/dashboard
if ! cmp -s "$dashboard/package-lock.json" "$dashboard/node_modules/.installed-package-lock.json"
then
  (cd "$dashboard" && npm ci --no-audit --no-fund)
  cp "$dashboard/package-lock.json" "$dashboard/node_modules/.installed-package-lock.json"
fi

[ "$build" -eq 0 ] && exit 0
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"

[ "$sanitizers" -eq 0 ] && exit 0
# The sanitizer builds: CPU only (host sanitizers do not see device code), -O1 -g (SSM_SANITIZE
# in CMakeLists.txt); their tests are the gtest suites (tests/sanitizers/sanitizers.cmake).
for variant in asan=address,undefined tsan=thread; do
  dir=build-${variant%%=*}
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSSM_ENABLE_CUDA=OFF \
        -DSSM_SANITIZE="${variant#*=}" >/dev/null
  cmake --build "$dir" -j"$(nproc)"
done
