#!/usr/bin/env bash
# ssm-mic end to end, through real PortAudio capture: an ALSA configuration (ALSA_CONFIG_PATH)
# makes the default capture device read a speech clip made with espeak-ng and sox (silence,
# phrase, silence, phrase, silence). ALSA's file device is not paced, so --max-seconds stops at
# the clip's end.
#   mic_test.sh BIN_DIR SOURCE_DIR capture   outputs equal ssm-stream's on the captured audio (16
#                                            and 48 kHz devices), --record, --list-devices,
#                                            Ctrl-C / SIGTERM, and the errors with their exit codes
#   mic_test.sh BIN_DIR SOURCE_DIR edges 16|48 [MODEL_DIR]
#                                            segments found by a trained speech-activity model
#                                            (default models/speech-activity) from a 16 or 48 kHz
#                                            device are within 100 ms of the clip's true speech
#                                            edges; exit 77 (skip) while that model is not there
set -uo pipefail
bin=$1 src=$2 mode=${3:-capture}
edge_khz=${4:-16}
model_dir=${5:-$src/models/speech-activity}
py=/usr/bin/python3  # Debian's, with numpy
helper="$src/tests/tools/mic_clip.py"
edge_tolerance_s=0.1

if [ "$mode" = edges ] &&
   { [ ! -f "$model_dir/config.json" ] || [ ! -f "$model_dir/model.safetensors" ]; }; then
  echo "SKIP: no trained speech-activity model at $model_dir (config.json + model.safetensors);" \
       "the segment-edge test runs once it is there"
  exit 77
fi
for tool in espeak-ng sox; do
  if ! command -v $tool >/dev/null; then
    echo "FAIL: $tool not found (deploy/install.sh installs it)"
    exit 1
  fi
done

tmp=$(mktemp -d)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
failures=0 passed=0
fail() {
  echo "FAIL: $1"
  [ -f "$tmp/out" ] && sed 's/^/  /' "$tmp/out"
  failures=$((failures + 1))
}

seconds_since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

# expect NAME CODE TEXT MAX_S COMMAND...: exits with CODE within MAX_S seconds, printing TEXT.
# Leaves stdout in $tmp/stdout, and stdout + stderr in $tmp/out.
expect() {
  local name=$1 code=$2 text=$3 max_s=$4 start=$EPOCHREALTIME rc elapsed
  timeout -k 5 60 "${@:5}" >"$tmp/stdout" 2>"$tmp/stderr"
  rc=$?
  elapsed=$(seconds_since "$start")
  cat "$tmp/stdout" "$tmp/stderr" >"$tmp/out"
  if [ "$rc" -ne "$code" ]; then fail "$name (exit $rc, expected $code)"
  elif ! grep -q -- "$text" "$tmp/out"; then fail "$name (output lacks '$text')"
  elif awk -v e="$elapsed" -v m="$max_s" 'BEGIN { exit !(e > m) }'; then
    fail "$name (took $elapsed s, limit $max_s)"
  else passed=$((passed + 1)); fi
}
check() {  # check NAME COMMAND...: the command must succeed
  if "${@:2}" >"$tmp/out" 2>&1; then passed=$((passed + 1)); else fail "$1"; return 1; fi
}

# alsa_conf FILE RAW RATE: the default capture device reads RAW (s16le mono at RATE Hz).
alsa_conf() {
  cat >"$1" <<EOF
pcm.!default {
  type plug
  slave {
    pcm { type file  slave.pcm { type null }  file "/dev/null"  infile "$2"  format "raw" }
    format S16_LE  rate $3  channels 1
  }
}
EOF
}

# start_server MODEL_DIR: ssm-server on a free loopback port; sets $server.
start_server() {
  "$bin/ssm-server" --model "$1" --listen 127.0.0.1:0 --metrics-listen "" --threads 2 \
    >"$tmp/server.out" 2>"$tmp/server.err" &
  server_pid=$!
  server=""
  for _ in $(seq 300); do
    server=$(sed -n 's/^listening on //p' "$tmp/server.out")
    [ -n "$server" ] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "FAIL: ssm-server did not start"; cat "$tmp/server.err"; exit 1
}

"$py" "$helper" make "$tmp" >"$tmp/out" 2>&1 || { fail "making the speech clip"; exit 1; }
cat "$tmp/out"
seconds=$("$py" -c "import json; print(json.load(open('$tmp/edges.json'))['duration_s'])")
sox -t raw -r 16000 -e signed -b 16 -c 1 "$tmp/clip16.raw" -t raw -r 48000 -e signed -b 16 -c 1 \
  "$tmp/clip48.raw"
alsa_conf "$tmp/clip16.conf" "$tmp/clip16.raw" 16000
alsa_conf "$tmp/clip48.conf" "$tmp/clip48.raw" 48000

if [ "$mode" = edges ]; then
  start_server "$model_dir"
  expect "ssm-mic on a $edge_khz kHz device with $model_dir" 0 '"type":"summary"' 60 \
    env ALSA_CONFIG_PATH="$tmp/clip$edge_khz.conf" "$bin/ssm-mic" --server "$server" --jsonl \
    --max-seconds "$seconds"
  cp "$tmp/stdout" "$tmp/mic.jsonl"
  check "segments within $edge_tolerance_s s of the true edges ($edge_khz kHz device)" \
    "$py" "$helper" segments "$tmp/mic.jsonl" "$tmp/edges.json" "$edge_tolerance_s" &&
    sed 's/^/  /' "$tmp/out"
  echo "$passed passed, $failures failed"
  [ "$failures" -eq 0 ]
  exit
fi

# --- capture mode ------------------------------------------------------------------------------
start_server "$src/models/random-demo"
# $tmp/mic CONF ARGS...: ssm-mic against the server with ALSA configuration CONF.
printf '#!/bin/sh\nconf=$1; shift\nALSA_CONFIG_PATH="$conf" exec "%s" --server "%s" "$@"\n' \
  "$bin/ssm-mic" "$server" >"$tmp/mic"
chmod +x "$tmp/mic"
mic="$tmp/mic"

expect "--help lists the flags and exit codes" 0 "Exit codes" 10 "$bin/ssm-mic" --help
grep -q -- "--list-devices" "$tmp/out" || fail "--help lacks --list-devices"
expect "--list-devices with the file device" 0 "ALSA" 10 \
  env ALSA_CONFIG_PATH="$tmp/clip16.conf" "$bin/ssm-mic" --list-devices
grep -Eq '^\*  +0  default +ALSA +[0-9]+ +16000$' "$tmp/out" ||
  fail "device 0 is not listed as the default, at 16000 Hz"
echo 'pcm.!default { type hw card 99 }' >"$tmp/none.conf"  # no card: PortAudio finds no device
expect "--list-devices with no devices" 0 "no input devices" 10 \
  env ALSA_CONFIG_PATH="$tmp/none.conf" "$bin/ssm-mic" --list-devices

# Outputs equal ssm-stream's on the captured audio (the --record file): a 16 kHz device (no
# resampling, s16 on the wire) and a 48 kHz one (streaming resampler vs whole-file resampling).
for rate in 16 48; do
  expect "capture from the ${rate} kHz file device" 0 '"stopped_by":"max-seconds"' 60 \
    "$mic" "$tmp/clip$rate.conf" --jsonl --jsonl-frames --max-seconds "$seconds" \
    --record "$tmp/rec$rate.wav"
  cp "$tmp/stdout" "$tmp/mic$rate.lines"
  check "summary names the ${rate} kHz device rate" \
    "$py" "$helper" summary "$tmp/mic$rate.lines" device_rate "${rate}000"
  check "--record holds the captured audio (${rate} kHz)" \
    "$py" "$helper" wav "$tmp/rec$rate.wav" "${rate}000" "$tmp/clip$rate.raw"
  check "ssm-stream on the recording" "$bin/ssm-stream" --server "$server" \
    --input "$tmp/rec$rate.wav" --output "$tmp/stream$rate.jsonl"
  check "ssm-mic frames == ssm-stream frames (${rate} kHz device)" \
    "$py" "$helper" frames-equal "$tmp/mic$rate.lines" "$tmp/stream$rate.jsonl"
done

# Chunks as long as the server allows (--max-chunk-ms, 1000 by default) from a 48 kHz device: the
# resampler may return more than one chunk's worth at once, and ssm-mic must split it.
expect "--chunk-ms at the server's limit, 48 kHz device" 0 '"stopped_by":"max-seconds"' 60 \
  "$mic" "$tmp/clip48.conf" --jsonl --chunk-ms 1000 --max-seconds "$seconds"

# The human-readable view (not a terminal here: segment lines and the summary, no redrawn bar).
frames=$("$py" -c "import json  # random-demo: win 400, hop 160
print((json.load(open('$tmp/edges.json'))['samples'] - 400) // 160 + 1)")
expect "live view without --jsonl" 0 "s of audio, $frames frames" 60 \
  "$mic" "$tmp/clip16.conf" --max-seconds "$seconds"
grep -q "speech segments" "$tmp/stdout" || fail "the summary is not on stdout"
if command -v script >/dev/null; then  # on a terminal: the redrawn probability bar
  expect "live view on a terminal" 0 "p(speech) [01].[0-9][0-9] \[[#.|]*\]" 60 \
    script -qec "'$mic' '$tmp/clip16.conf' --max-seconds 2" /dev/null
fi

# Ctrl-C and SIGTERM: stop capturing, take the last outputs, print the summary, exit 0. The file
# device runs past the clip's end (stale data) for as long as needed.
for sig in INT TERM; do
  "$mic" "$tmp/clip16.conf" --jsonl --max-seconds 100000 >"$tmp/sig.out" 2>"$tmp/sig.err" &
  pid=$!
  for _ in $(seq 100); do grep -q capturing "$tmp/sig.err" && break; sleep 0.1; done
  sleep 0.5
  kill -"$sig" "$pid"
  start=$EPOCHREALTIME
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null && echo "ssm-mic still running 15 s after SIG$sig" >>"$tmp/sig.err"
  wait "$pid"
  rc=$?
  cat "$tmp/sig.out" "$tmp/sig.err" >"$tmp/out"
  if [ "$rc" -ne 0 ]; then fail "SIG$sig (exit $rc, expected 0)"
  elif ! grep -q '"stopped_by":"signal"' "$tmp/sig.out"; then fail "SIG$sig: no summary line"
  else passed=$((passed + 1)); echo "SIG$sig: stopped in $(seconds_since "$start") s"; fi
done

# Errors: a message and the documented exit code, quickly.
free_port=$("$py" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')  # bound, then closed: nothing listens there
expect "ALSA_CONFIG_PATH naming a missing file" 3 "ALSA_CONFIG_PATH names $tmp/nope.conf" 10 \
  "$mic" "$tmp/nope.conf" --max-seconds 1
expect "no input device at all" 3 "no default input device" 10 \
  "$mic" "$tmp/none.conf" --max-seconds 1
echo 'pcm.!default { type asym playback.pcm { type null } }' >"$tmp/playback.conf"
expect "an output-only device" 3 "no default input device" 10 \
  "$mic" "$tmp/playback.conf" --max-seconds 1
expect "--input-device 999" 3 "no input device with index 999" 10 \
  "$mic" "$tmp/clip16.conf" --input-device 999 --max-seconds 1
expect "--input-device by a name nothing has" 3 'no input device whose name contains "usb mic"' 10 \
  "$mic" "$tmp/clip16.conf" --input-device "usb mic" --max-seconds 1
expect "device that cannot be opened at the rate asked" 3 "cannot open input device 0" 10 \
  "$mic" "$tmp/clip16.conf" --sample-rate 1 --max-seconds 1
expect "unreachable server" 1 "cannot reach ssm-server at 127.0.0.1:$free_port" 10 \
  env ALSA_CONFIG_PATH="$tmp/clip16.conf" "$bin/ssm-mic" --server "127.0.0.1:$free_port" \
  --connect-timeout-s 1 --max-seconds 1
expect "unknown model" 1 "unknown model" 10 \
  "$mic" "$tmp/clip16.conf" --model nope --max-seconds 1
expect "--record into a missing folder" 4 "cannot create $tmp/missing/r.wav" 10 \
  "$mic" "$tmp/clip16.conf" --record "$tmp/missing/r.wav" --max-seconds 1
expect "--speech-output beyond d_out" 2 "has outputs 0..1" 10 \
  "$mic" "$tmp/clip16.conf" --speech-output 5 --max-seconds 1
expect "--jsonl-frames without --jsonl" 2 "needs --jsonl" 10 \
  "$mic" "$tmp/clip16.conf" --jsonl-frames
expect "no --server" 2 "--server" 10 "$bin/ssm-mic" --max-seconds 1

echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
