#!/usr/bin/env bash
# Verifies the cuda backend on a machine with an NVIDIA GPU, in one go:
#   tests/gpu/run.sh [OUT_DIR]
# builds Release with CUDA, runs every test (the CUDA ones no longer skip), runs compute-sanitizer
# (memcheck, racecheck) on the cuda op tests, runs the GPU benchmarks, and writes a summary table
# to OUT_DIR/summary.md (default: gpu-results/).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-gpu-results}
mkdir -p "$out"
summary="$out/summary.md"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/device.txt" 2>&1
./deploy/install.sh --no-build > "$out/install.log" 2>&1 || true
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release > "$out/configure.log" 2>&1
cmake --build build-gpu -j"$(nproc)" > "$out/build.log" 2>&1 || { echo "build failed" >> "$summary"; exit 1; }
row() { printf '| %s | %s |\n' "$1" "$2" >> "$summary"; }
{ echo "# GPU verification $(date -u +%F) commit $(git rev-parse --short HEAD)"; echo;
  echo "device: $(cat "$out/device.txt")"; echo; echo "| check | result |"; echo "|---|---|"; } > "$summary"
ctest --test-dir build-gpu -j4 --output-on-failure > "$out/ctest.log" 2>&1
row "ctest (all)" "$(grep -E 'tests passed|tests failed' "$out/ctest.log" | tail -1)"
row "CUDA tests skipped" "$(grep -c 'Skipped' "$out/ctest.log")"
# The integration tests again with the server and their expected outputs on the GPU.
SSM_TEST_DEVICE=cuda ctest --test-dir build-gpu -L 'integration|tools' -j4 --output-on-failure \
  > "$out/ctest-integration-cuda.log" 2>&1
row "integration tests, --device cuda" \
  "$(grep -E 'tests passed|tests failed' "$out/ctest-integration-cuda.log" | tail -1)"
for tool in memcheck racecheck; do
  compute-sanitizer --tool $tool --error-exitcode 1 build-gpu/bin/kernel_tests \
    --gtest_filter='CudaOpsTest.*' > "$out/sanitizer-$tool.log" 2>&1
  row "compute-sanitizer $tool" "exit $? ($(grep -m1 'ERROR SUMMARY' "$out/sanitizer-$tool.log"))"
done
# Conv and scan bandwidth vs a device-to-device copy: the offline segment shape (64 x 1024 rows)
# and one long input (4 x 65536 rows: little parallelism across sequences).
for shape in "64 1024" "4 65536"; do
  set -- $shape
  build-gpu/bin/cuda_kernel_bench --streams $1 --frames $2 > "$out/kernels-$1x$2.json" 2>&1
  row "conv / scan bandwidth, $1 x $2 rows" "$(python3 -c "import json;d=json.load(open('$out/kernels-$1x$2.json'));print('copy %.0f GB/s; conv %.0f GB/s (%.2f); scan %.0f GB/s (%.2f)' % (d['copy_gb_per_s'], d['conv_gb_per_s'], d['conv_vs_copy'], d['scan_gb_per_s'], d['scan_vs_copy']))" 2>/dev/null || echo failed)"
done
build-gpu/bin/ssm-model random --preset bench-m --seed 1 --out "$out/bench-m" --force > /dev/null
build-gpu/bin/ssm-model random --preset bench-l --seed 1 --out "$out/bench-l" --force > /dev/null
for m in bench-m bench-l; do
  for n in 256 4096 20000; do
    build-gpu/bin/ssm-bench --model "$out/$m" --device cuda --streams $n --chunk-frames 10 \
      --seconds 10 --json > "$out/bench-$m-$n.json" 2> "$out/bench-$m-$n.err"
    row "ssm-bench $m $n streams" "$(python3 -c "import json;d=json.load(open('$out/bench-$m-$n.json'));print('%.0f real-time streams, step p99 %.1f ms' % (d['realtime_streams'], d['step_ms_p99']))" 2>/dev/null || echo failed)"
  done
  build-gpu/bin/ssm-bench --model "$out/$m" --device cuda --offline 360000 --json \
    > "$out/offline-$m.json" 2> "$out/offline-$m.err"
  row "offline $m 360,000 frames" "$(python3 -c "import json;d=json.load(open('$out/offline-$m.json'));print('%.0fx real time' % d['realtime_factor'])" 2>/dev/null || echo failed)"
done
cat "$summary"
