#!/usr/bin/env bash
# Packs the CUDA-enabled binaries of a build, with the shared libraries they load (all but the C
# library's own), into one archive for a GPU machine that cannot install packages:
#   tests/gpu/pack.sh [BUILD_DIR] [ARCHIVE]      (defaults: build, gpu-pack.tar.xz)
# Then, on the GPU machine, from a copy of this tree: tests/gpu/run.sh --prebuilt ARCHIVE.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
archive=${2:-gpu-pack.tar.xz}
binaries=(kernel_tests engine_tests model_tests frontend_tests integration_tests ssm-server
          ssm-run ssm-model ssm-bench cuda_kernel_bench ssm-stream ssm-batch ssm-loadgen)
[ -x "$build/bin/cuda_kernel_bench" ] ||
  { echo "pack.sh: $build has no CUDA backend (no cuda_kernel_bench): build where nvcc is" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
for b in "${binaries[@]}"; do cp "$build/bin/$b" "$stage/bin/"; done
# The C library (libc, libm, ld-linux, ...) stays the GPU machine's; everything else travels.
for b in "${binaries[@]}"; do ldd "$build/bin/$b"; done | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libpthread|libdl|librt|libresolv|ld-linux[^/]*)\.so' |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
# The Python client's generated stubs (the Python client tests need them).
# (Tests look for them beside bin/, as in a build directory.)
if [ -d "$build/clients/python/gen" ]; then
  mkdir -p "$stage/clients/python" && cp -r "$build/clients/python/gen" "$stage/clients/python/"
fi
# The paths built into the tests (SSM_SOURCE_DIR, SSM_BIN_DIR) and the commit.
realpath . > "$stage/SOURCE_DIR"
realpath "$build/bin" > "$stage/BIN_DIR"
git rev-parse --short HEAD > "$stage/COMMIT"
tar -cJf "$archive" -C "$stage" .
echo "pack.sh: $archive ($(du -h "$archive" | cut -f1)): ${#binaries[@]} binaries, $(ls "$stage/lib" | wc -l) libraries"
