#!/usr/bin/env bash
# The whole test suite: every test of the Release build (build/), then the unit and integration
# suites under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/) and the threaded ones
# under ThreadSanitizer (build-tsan/); deploy/install.sh --sanitizers builds all three. Each suite
# runs even when one before it failed; the exit status is 1 if any failed.
#
# Under the sanitizers the server runs 2-15 times slower, and a timing-sensitive test that
# fails there is run once more (ctest --repeat until-pass:2): it fails the suite only if it fails
# twice. Every test that needed the second run is listed at the end, so that it gets fixed; the
# Release suite has no second runs.
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
retried=()
for dir in "${dirs[@]}"; do
  echo "run-all.sh: ctest --test-dir $dir"
  start=$SECONDS
  repeat=()
  [ "$dir" != build ] && repeat=(--repeat until-pass:2)
  log="$dir/run-all.log"
  ctest --test-dir "$dir" --output-on-failure -j2 "${repeat[@]}" "$@" 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("$dir")
  # A test that failed on its first run and passed on its second: "Test #N: NAME ...***Failed".
  while read -r name; do
    retried+=("$dir: $name")
  done < <(grep -oE 'Test +#[0-9]+: [^ ]+ \.*\*\*\*(Failed|Exception|Timeout)' "$log" |
           sed -E 's/^Test +#[0-9]+: ([^ ]+) .*/\1/' | sort -u)
  echo "run-all.sh: $dir took $((SECONDS - start)) s"
done
if [ ${#retried[@]} -gt 0 ]; then
  echo "run-all.sh: tests that failed a run (under a sanitizer, a second run decides):" >&2
  printf '  %s\n' "${retried[@]}" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "run-all.sh: tests failed in ${failed[*]}" >&2
  exit 1
fi
