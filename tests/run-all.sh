#!/usr/bin/env bash
# The whole test suite: every test of the Release build (build/), then the unit and integration
# suites under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) and the threaded ones
# under ThreadSanitizer (build-tsan/); deploy/install.sh --sanitizers builds all three. Each suite
# runs even when one before it failed; the exit status is 1 if any failed.
#   tests/run-all.sh [CTEST_ARGS...]   e.g. tests/run-all.sh -L integration
set -uo pipefail
cd "$(dirname "$0")/.."

dirs=(build build-asan build-tsan)
for dir in "${dirs[@]}"; do
  if [ ! -f "$dir/CTestTestfile.cmake" ]; then
    echo "run-all.sh: $dir/ has no tests: run deploy/install.sh --sanitizers first" >&2
    exit 2
  fi
done
failed=()
for dir in "${dirs[@]}"; do
  echo "run-all.sh: ctest --test-dir $dir"
  start=$SECONDS
  ctest --test-dir "$dir" --output-on-failure -j2 "$@" || failed+=("$dir")
  echo "run-all.sh: $dir took $((SECONDS - start)) s"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "run-all.sh: tests failed in ${failed[*]}" >&2
  exit 1
fi
