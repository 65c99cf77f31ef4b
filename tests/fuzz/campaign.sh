#!/usr/bin/env bash
# Runs one fuzz target (tests/fuzz/README.md) over its committed corpus plus a scratch corpus
# that it grows, then prints the executions, the rate and the corpus size.
#   tests/fuzz/campaign.sh [--fresh] TARGET SECONDS|-runs=N [libFuzzer flags...]
# TARGET: safetensors, config, npy, audio, payload, snapshot, model_dir, keys, stream. --fresh
# empties the scratch corpus first (ctest does; a campaign keeps it, so the next one continues
# from it).
# Environment: SSM_FUZZ_BUILD (the fuzz build, default build/fuzz), SSM_FUZZ_WORK (scratch
# corpora and crash inputs, default $SSM_FUZZ_BUILD/campaign). Exit status: libFuzzer's, 0 when
# nothing was found; a crash, leak, timeout, out-of-memory or UBSan report leaves its input in
# $SSM_FUZZ_WORK/TARGET/ and fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

fresh=0
if [ "${1:-}" = "--fresh" ]; then fresh=1; shift; fi
if [ $# -lt 2 ]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
target="$1" budget="$2"
shift 2
case "$budget" in
  -runs=[0-9]*) limit=("$budget") ;;
  [0-9]*) limit=("-max_total_time=$budget") ;;
  *) echo "campaign.sh: expected SECONDS or -runs=N, found '$budget'" >&2; exit 2 ;;
esac

build="${SSM_FUZZ_BUILD:-$root/build/fuzz}"
binary="$build/bin/${target}_fuzz"
seeds="$here/corpus/$target"
if [ ! -x "$binary" ]; then
  echo "campaign.sh: $binary is missing; build it with" >&2
  echo "  CXX=clang++ cmake -S tests/fuzz -B build/fuzz -G Ninja && cmake --build build/fuzz" >&2
  exit 2
fi
[ -d "$seeds" ] || { echo "campaign.sh: no seed corpus $seeds" >&2; exit 2; }

work="${SSM_FUZZ_WORK:-$build/campaign}/$target"
corpus="$work/corpus"  # new inputs go here; the committed seeds are only read
[ "$fresh" -eq 1 ] && rm -rf "$work"
mkdir -p "$corpus"
log="$work/fuzz.log"
stamp="$work/.started"  # findings newer than this are this run's
touch "$stamp"

flags=(-timeout=25 -rss_limit_mb=2048 -error_exitcode=77 -timeout_exitcode=70
       -print_final_stats=1 -artifact_prefix="$work/")
[ -f "$here/$target.dict" ] && flags+=(-dict="$here/$target.dict")
# The stream target's service keeps state from one input to the next by design (parked streams
# for their TTL, the fates of tokens, metrics), so its mallocs and frees never balance within an
# input, and libFuzzer would run a whole LeakSanitizer scan after nearly every one (a fifth of
# the rate). Leaks are still found: LeakSanitizer checks the whole process when it exits.
[ "$target" = stream ] && flags+=(-detect_leaks=0)

# A UBSan report aborts (the targets are built with -fno-sanitize-recover); leaks are findings.
asan="detect_leaks=1:detect_stack_use_after_return=1:strict_string_checks=1"
export ASAN_OPTIONS="${ASAN_OPTIONS:-$asan}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

start=$(date +%s)
status=0
"$binary" "${flags[@]}" "${limit[@]}" "$@" "$corpus" "$seeds" >"$log" 2>&1 || status=$?
elapsed=$(( $(date +%s) - start ))

stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
runs="$(stat number_of_executed_units)"
rate="$(stat average_exec_per_sec)"
files=$(find "$corpus" -type f | wc -l)
bytes=$(du -sb "$corpus" | cut -f1)
echo "$target: ${runs:-?} executions in ${elapsed} s (${rate:-?} exec/s)," \
     "scratch corpus $files files, $bytes bytes ($corpus)"
if [ "$status" -ne 0 ]; then
  grep -E "ERROR|FUZZ_CHECK|runtime error|SUMMARY|Test unit written|ALARM|out-of-memory" \
    "$log" | head -40 || true
  echo "$target: libFuzzer exited with $status; full log: $log"
  for input in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
    [ -f "$input" ] && [ "$input" -nt "$stamp" ] || continue
    echo "  finding: $input  (replay: $binary $input;" \
         "keep as a regression: cp $input $seeds/regress-NAME)"
  done
fi
exit "$status"
