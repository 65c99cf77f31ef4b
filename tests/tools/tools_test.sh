#!/usr/bin/env bash
# ssm-model and ssm-run end to end: create, inspect, validate, run offline and streamed (outputs
# must be identical files), and the errors a user gets for common mistakes; ssm-keys: new, cert,
# hash and check agree with each other, and bad entries are refused.
#   tools_test.sh BIN_DIR SOURCE_DIR
set -uo pipefail
bin=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0 passed=0
check() {  # check NAME COMMAND...: the command must succeed
  if "${@:2}" >"$tmp/out" 2>&1; then passed=$((passed + 1)); else
    echo "FAIL: $1"; sed 's/^/  /' "$tmp/out"; failures=$((failures + 1)); fi
}
check_error() {  # check_error NAME EXPECTED_TEXT COMMAND...: must fail and print EXPECTED_TEXT
  if "${@:3}" >"$tmp/out" 2>&1; then
    echo "FAIL: $1 (succeeded, expected an error)"; failures=$((failures + 1))
  elif ! grep -q -- "$2" "$tmp/out"; then
    echo "FAIL: $1 (error text lacks '$2')"; sed 's/^/  /' "$tmp/out"; failures=$((failures + 1))
  else passed=$((passed + 1)); fi
}

check "ssm-model random bench-s" "$bin/ssm-model" random --preset bench-s --seed 7 --out "$tmp/m"
check "ssm-model inspect" "$bin/ssm-model" inspect "$tmp/m"
grep -q "parameters" "$tmp/out" || { echo "FAIL: inspect output lacks parameters"; failures=$((failures + 1)); }
check "ssm-model validate" "$bin/ssm-model" validate "$tmp/m"
check_error "ssm-model random refuses to overwrite" "force" \
  "$bin/ssm-model" random --preset bench-s --seed 7 --out "$tmp/m"
check_error "ssm-model unknown preset" "bench-m" "$bin/ssm-model" random --preset nope --seed 1 --out "$tmp/x"

wav="$src/models/samples/speech.wav"
check "ssm-run offline" "$bin/ssm-run" --model "$tmp/m" --input "$wav" --output "$tmp/off.npy"
check "ssm-run stream 1600" "$bin/ssm-run" --model "$tmp/m" --input "$wav" --output "$tmp/s1.npy" \
  --mode stream --chunk 1600
check "ssm-run stream 333" "$bin/ssm-run" --model "$tmp/m" --input "$wav" --output "$tmp/s2.npy" \
  --mode stream --chunk 333
check "stream(1600) output == offline output" cmp "$tmp/off.npy" "$tmp/s1.npy"
check "stream(333) output == offline output" cmp "$tmp/off.npy" "$tmp/s2.npy"

check_error "ssm-run stream without --chunk" "chunk" \
  "$bin/ssm-run" --model "$tmp/m" --input "$wav" --output "$tmp/o.npy" --mode stream
sox_rate() { python3 - "$1" "$2" <<'PY'
import sys, wave
src, dst = sys.argv[1], sys.argv[2]
with wave.open(src) as r, wave.open(dst, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
    w.writeframes(r.readframes(r.getnframes()))
PY
}
sox_rate "$wav" "$tmp/8k.wav"
check "ssm-run resamples an 8 kHz file" "$bin/ssm-run" --model "$tmp/m" --input "$tmp/8k.wav" \
  --output "$tmp/8k.npy"
grep -q "resampled from 8000 Hz" "$tmp/out" || { echo "FAIL: no resampling note"; failures=$((failures + 1)); }
echo "not a model" >"$tmp/m/config.json"
check_error "ssm-run broken config" "config.json" \
  "$bin/ssm-run" --model "$tmp/m" --input "$wav" --output "$tmp/o.npy"
check_error "ssm-run --help lists --model" "--model" sh -c "'$bin/ssm-run' --help; exit 1"

# ssm-keys: the line of `new` holds the hash of its secret (as `hash` computes it), never the
# secret; `check` reads what `new` and `cert` print; bad limits and files are refused.
check "ssm-keys new" "$bin/ssm-keys" new alice --models vad,demo --max-streams 3
secret=$(sed -n 's/^secret: //p' "$tmp/out")
sed -n 's/^line: *//p' "$tmp/out" >"$tmp/keys"
grep -q "^alice sha256:[0-9a-f]\{64\} vad,demo 3 -$" "$tmp/keys" || {
  echo "FAIL: ssm-keys new printed no line"; cat "$tmp/keys"; failures=$((failures + 1)); }
grep -q -- "$secret" "$tmp/keys" && { echo "FAIL: the line holds the secret"; failures=$((failures + 1)); }
check "ssm-keys hash" sh -c "echo '$secret' | '$bin/ssm-keys' hash"
grep -q "$(cut -d' ' -f2 "$tmp/keys")" "$tmp/out" || {
  echo "FAIL: ssm-keys hash disagrees with new"; failures=$((failures + 1)); }
check "ssm-keys cert" "$bin/ssm-keys" cert cam --subject "CN=camera 7,O=Example"
cat "$tmp/out" >>"$tmp/keys"
check "ssm-keys check" "$bin/ssm-keys" check "$tmp/keys"
grep -q "2 keys, valid" "$tmp/out" || { echo "FAIL: ssm-keys check"; cat "$tmp/out"; failures=$((failures + 1)); }
check_error "ssm-keys bad id" "only letters" "$bin/ssm-keys" new "b@d"
check_error "ssm-keys bad limit" "max-streams" "$bin/ssm-keys" new ok --max-streams -1
echo "alice sha256:abc * - -" >"$tmp/bad-keys"
check_error "ssm-keys check a bad file" "line 1: sha256: expects 64 hex digits" \
  "$bin/ssm-keys" check "$tmp/bad-keys"

echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
