#!/usr/bin/env bash
# Verifies the cuda backend on a machine with an NVIDIA GPU, in one go, and writes a summary table
# to OUT_DIR/summary.md (default: gpu-results/):
#   tests/gpu/run.sh [OUT_DIR]                      build here (needs deploy/install.sh's packages)
#   tests/gpu/run.sh --prebuilt PACK.tar.xz [OUT_DIR]  binaries packed by tests/gpu/pack.sh on a
#                                                      machine with the packages (for a GPU
#                                                      machine that cannot install any)
# Runs every test (the CUDA ones no longer skip), the integration tests with the server on the GPU,
# compute-sanitizer (memcheck, racecheck) on the cuda op tests, and the GPU benchmarks.
set -uo pipefail
cd "$(dirname "$0")/../.."
pack="" root=""
if [ "${1:-}" = "--prebuilt" ]; then
  pack=$2
  shift 2
fi
out=${1:-gpu-results}
mkdir -p "$out"
summary="$out/summary.md"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/device.txt" 2>&1
row() { printf '| %s | %s |\n' "$1" "$2" >> "$summary"; }
# gtest_result LOG: "N passed, N failed, N skipped" from a gtest binary's log.
gtest_result() {
  local passed failed skipped
  passed=$(grep -m1 -oE '\[  PASSED  \] [0-9]+' "$1" | grep -oE '[0-9]+$')
  failed=$(grep -m1 -oE '\[  FAILED  \] [0-9]+ test' "$1" | grep -oE '[0-9]+' | head -1)
  skipped=$(grep -m1 -oE '\[  SKIPPED \] [0-9]+' "$1" | grep -oE '[0-9]+$')
  echo "${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped"
}

if [ -z "$pack" ]; then
  ./deploy/install.sh --no-build > "$out/install.log" 2>&1 || true
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/configure.log" 2>&1
  cmake --build build-gpu -j"$(nproc)" > "$out/build.log" 2>&1 ||
    { echo "build failed: $out/build.log" > "$summary"; exit 1; }
  bin=build-gpu/bin
else
  # The binaries have the packing machine's source and bin paths built in (tests find their
  # models and tools there): recreate them as links to this tree and to the unpacked binaries.
  root=/tmp/ssm-gpu-pack
  rm -rf "$root" && mkdir -p "$root" && tar -xJf "$pack" -C "$root" ||
    { echo "cannot unpack $pack" > "$summary"; exit 1; }
  export LD_LIBRARY_PATH="$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  source_dir=$(cat "$root/SOURCE_DIR") bin_dir=$(cat "$root/BIN_DIR")
  # Only links are ever replaced: a real directory at either path is left alone.
  for path in "$source_dir" "$bin_dir"; do
    if [ -e "$path" ] && [ ! -L "$path" ] && [ "$path" = "$bin_dir" -o \
         "$(realpath "$path")" != "$(realpath .)" ]; then
      echo "refusing to replace $path (a real directory; use --prebuilt on the GPU machine)" \
        > "$summary"
      cat "$summary"; exit 1
    fi
  done
  if [ "$(realpath -m "$source_dir")" != "$(realpath .)" ]; then
    mkdir -p "$(dirname "$source_dir")" && rm -f "$source_dir" && ln -s "$(realpath .)" "$source_dir"
  fi
  mkdir -p "$(dirname "$bin_dir")" && rm -f "$bin_dir" && ln -s "$root/bin" "$bin_dir"
  if [ -d "$root/clients/python/gen" ]; then  # where ssm_client.py looks by default
    mkdir -p "$(dirname "$bin_dir")/clients/python" &&
      cp -r "$root/clients/python/gen" "$(dirname "$bin_dir")/clients/python/"
  fi
  bin=$root/bin
fi

{ echo "# GPU verification $(date -u +%F) commit $(git rev-parse --short HEAD 2>/dev/null || cat "$root/COMMIT")"
  echo; echo "device: $(cat "$out/device.txt")"; echo
  [ -n "$pack" ] && echo "binaries: $pack ($(cat "$root/COMMIT"))" && echo
  echo "| check | result |"; echo "|---|---|"; } > "$summary"

if [ -z "$pack" ]; then
  ctest --test-dir build-gpu -j4 --output-on-failure > "$out/ctest.log" 2>&1
  row "ctest (all)" "$(grep -E 'tests passed|tests failed' "$out/ctest.log" | tail -1)"
  row "CUDA tests skipped" "$(grep -c 'Skipped' "$out/ctest.log")"
  # The integration tests again with the server and their expected outputs on the GPU.
  SSM_TEST_DEVICE=cuda ctest --test-dir build-gpu -L 'integration|tools' -j4 --output-on-failure \
    > "$out/ctest-integration-cuda.log" 2>&1
  row "integration tests, --device cuda" \
    "$(grep -E 'tests passed|tests failed' "$out/ctest-integration-cuda.log" | tail -1)"
else
  for t in kernel_tests engine_tests model_tests frontend_tests integration_tests; do
    "$bin/$t" > "$out/$t.log" 2>&1
    row "$t" "exit $? ($(gtest_result "$out/$t.log"))"
  done
  SSM_TEST_DEVICE=cuda "$bin/integration_tests" > "$out/integration_tests-cuda.log" 2>&1
  row "integration_tests, --device cuda" \
    "exit $? ($(gtest_result "$out/integration_tests-cuda.log"))"
fi
for tool in memcheck racecheck; do
  compute-sanitizer --tool $tool --error-exitcode 1 "$bin/kernel_tests" \
    --gtest_filter='Backends/OpsTest.*/cuda' > "$out/sanitizer-$tool.log" 2>&1
  row "compute-sanitizer $tool" "exit $? ($(grep -m1 'ERROR SUMMARY' "$out/sanitizer-$tool.log"))"
done
# Conv and scan bandwidth vs a device-to-device copy: the offline segment shape (64 x 1024 rows)
# and one long input (4 x 65536 rows: little parallelism across sequences).
for shape in "64 1024" "4 65536"; do
  set -- $shape
  "$bin/cuda_kernel_bench" --streams $1 --frames $2 > "$out/kernels-$1x$2.json" 2>&1
  row "conv / scan bandwidth, $1 x $2 rows" "$(python3 -c "import json;d=json.load(open('$out/kernels-$1x$2.json'));print('copy %.0f GB/s; conv %.0f GB/s (%.2f); scan %.0f GB/s (%.2f)' % (d['copy_gb_per_s'], d['conv_gb_per_s'], d['conv_vs_copy'], d['scan_gb_per_s'], d['scan_vs_copy']))" 2>/dev/null || echo failed)"
done
"$bin/ssm-model" random --preset bench-m --seed 1 --out "$out/bench-m" --force > /dev/null
"$bin/ssm-model" random --preset bench-l --seed 1 --out "$out/bench-l" --force > /dev/null
for m in bench-m bench-l; do
  for n in 256 4096 20000; do
    "$bin/ssm-bench" --model "$out/$m" --device cuda --streams $n --chunk-frames 10 \
      --seconds 10 --json > "$out/bench-$m-$n.json" 2> "$out/bench-$m-$n.err"
    row "ssm-bench $m $n streams" "$(python3 -c "import json;d=json.load(open('$out/bench-$m-$n.json'));print('%.0f real-time streams, step p99 %.1f ms' % (d['realtime_streams'], d['step_ms_p99']))" 2>/dev/null || echo failed)"
  done
  "$bin/ssm-bench" --model "$out/$m" --device cuda --offline 360000 --json \
    > "$out/offline-$m.json" 2> "$out/offline-$m.err"
  row "offline $m 360,000 frames" "$(python3 -c "import json;d=json.load(open('$out/offline-$m.json'));print('%.0fx real time' % d['realtime_factor'])" 2>/dev/null || echo failed)"
done
cat "$summary"
