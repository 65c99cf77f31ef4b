// Stream snapshots (server/engine/snapshot.*, Engine::RestoreStream) on any bytes.
// Decoding: fails closed (DATA_LOSS, or FAILED_PRECONDITION for another format version), and
// bytes that decode are exactly what EncodeSnapshot writes for the result.
// Restoring: the bytes are decoded again resealed (total length and checksum made right), so
// mutations reach the body, and restored into one of two tiny models' engines: the one the
// fingerprint names, else the one bit 0 of the checksum's first byte picks, with its fingerprint
// put in unless bit 1 is set (then the engine must refuse the foreign snapshot). A restore the
// engine accepts must hold the snapshot's state exactly (SnapshotStream gives it back), and two
// streams restored from it and fed the same input in different chunkings must give the same
// outputs bitwise and end in the same state: the exactness contract from an arbitrary state.
#include <cmath>
#include <cstring>

#include "server/engine/engine.h"
#include "server/engine/snapshot.h"
#include "server/model/random_model.h"
#include "tests/fuzz/fuzz_util.h"

namespace ssm {
namespace {

constexpr size_t kHeaderBytes = 24;  // magic, version, flags, total bytes
constexpr size_t kChecksumBytes = 32;

struct Target {
  std::unique_ptr<Engine> engine;
  std::vector<float> input;  // one chunk, split in two for the second stream
  size_t split = 0;          // values in the first part (a whole number of frames for frames)
};

Target MakeTarget(const ModelConfig& config, size_t values, size_t split) {
  auto model = MakeRandomModel(config, /*seed=*/7);
  FUZZ_CHECK(model.ok(), "{}", model.status().ToString());
  EngineOptions options;
  options.backend = "cpu";
  options.threads = 1;
  options.max_streams = 2;
  options.max_batch_frames = 2;  // the chunks below take several passes
  auto engine = Engine::Create(*model, options);
  FUZZ_CHECK(engine.ok(), "{}", engine.status().ToString());
  Target t{std::move(*engine), std::vector<float>(values), split};
  for (size_t i = 0; i < values; ++i) t.input[i] = 0.4f * std::sin(0.3f * float(i)) - 0.1f;
  return t;
}

std::vector<Target>& Targets() {
  static std::vector<Target> targets = [] {
    std::vector<Target> t;
    t.push_back(MakeTarget(fuzz::TinyAudioConfig(), 77, 29));  // samples: ~4 frames of hop 16
    t.push_back(MakeTarget(fuzz::TinyFrameConfig(), 10, 4));   // 5 frames of 2 floats
    return t;
  }();
  return targets;
}

bool SameFloats(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), 4 * a.size()) == 0);
}

// What RestoreStream must keep: every layer, the frontend carry, the model and d_out.
void CheckSameState(const StreamSnapshot& a, const StreamSnapshot& b, const char* what) {
  FUZZ_CHECK(DigestsEqual(a.model_fingerprint, b.model_fingerprint), "{}: fingerprint", what);
  FUZZ_CHECK(a.d_out == b.d_out && a.precision == b.precision, "{}", what);
  FUZZ_CHECK(a.frontend.frames == b.frontend.frames && a.frontend.skip == b.frontend.skip &&
                 SameFloats(a.frontend.pending, b.frontend.pending),
             "{}: frontend carry {} {} {} / {} {} {}", what, a.frontend.frames, a.frontend.skip,
             a.frontend.pending.size(), b.frontend.frames, b.frontend.skip,
             b.frontend.pending.size());
  FUZZ_CHECK(a.layers.size() == b.layers.size(), "{}", what);
  for (size_t l = 0; l < a.layers.size(); ++l)
    FUZZ_CHECK(SameFloats(a.layers[l], b.layers[l]), "{}: layer {} state", what, l);
}

StatusOr<StreamSnapshot> Decode(const std::string& bytes) {
  auto s = DecodeSnapshot(bytes);
  if (s.ok()) {
    FUZZ_CHECK(EncodeSnapshot(*s) == bytes, "decoded bytes do not encode back the same");
    return s;
  }
  uint32_t version = 0;
  if (bytes.size() >= 12) std::memcpy(&version, bytes.data() + 8, 4);
  const bool other_version = bytes.size() >= kHeaderBytes + kChecksumBytes &&
                             std::memcmp(bytes.data(), "SSMSNAP", 8) == 0 &&
                             version != kSnapshotVersion;
  FUZZ_CHECK(s.status().code() ==
                 (other_version ? StatusCode::kFailedPrecondition : StatusCode::kDataLoss),
             "{}", s.status().ToString());
  return s;
}

// Restores `s` twice into `t`'s engine and checks the two streams agree with it and each other.
void Restore(Target& t, const StreamSnapshot& s) {
  Engine& e = *t.engine;
  auto a = e.RestoreStream(s);
  if (!a.ok()) {
    const bool foreign =
        !DigestsEqual(s.model_fingerprint, e.model().fingerprint()) || s.precision != "f32";
    FUZZ_CHECK(
        a.status().code() == (foreign ? StatusCode::kFailedPrecondition : StatusCode::kDataLoss),
        "{}", a.status().ToString());
    return;
  }
  FUZZ_CHECK(e.frames_emitted(*a) == s.frontend.frames);
  auto saved = e.SnapshotStream(*a);
  FUZZ_CHECK(saved.ok(), "{}", saved.status().ToString());
  CheckSameState(s, *saved, "restored");
  auto b = e.RestoreStream(s);
  FUZZ_CHECK(b.ok(), "the second restore failed: {}", b.status().ToString());

  StepResult whole, first, second;
  e.Step({{*a, t.input.data(), t.input.size()}}, &whole);
  e.Step({{*b, t.input.data(), t.split}}, &first);
  e.Step({{*b, t.input.data() + t.split, t.input.size() - t.split}}, &second);
  const ChunkOutput &w = whole.chunks[0], &p1 = first.chunks[0], &p2 = second.chunks[0];
  FUZZ_CHECK(w.status.ok() || w.status.code() == StatusCode::kInternal, "{}",
             w.status.ToString());  // only a non-finite output may fail this input
  if (w.status.ok()) {
    FUZZ_CHECK(p1.status.ok() && p2.status.ok(), "{} / {}", p1.status.ToString(),
               p2.status.ToString());
    FUZZ_CHECK(w.first_frame == s.frontend.frames && p1.first_frame == s.frontend.frames &&
               p2.first_frame == s.frontend.frames + p1.frames);
    FUZZ_CHECK(w.frames == p1.frames + p2.frames, "{} frames whole, {} + {} in parts", w.frames,
               p1.frames, p2.frames);
    std::vector<float> parts(first.outputs);
    parts.insert(parts.end(), second.outputs.begin(), second.outputs.end());
    FUZZ_CHECK(SameFloats(whole.outputs, parts), "outputs depend on the chunking");
    auto end_a = e.SnapshotStream(*a);
    auto end_b = e.SnapshotStream(*b);
    FUZZ_CHECK(end_a.ok() && end_b.ok());
    CheckSameState(*end_a, *end_b, "after the chunks");
  } else {
    FUZZ_CHECK(!p1.status.ok() || !p2.status.ok(), "a chunking avoided the non-finite output");
  }
  e.CloseStream(*a);
  e.CloseStream(*b);
}

}  // namespace
}  // namespace ssm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ssm;
  std::string bytes(reinterpret_cast<const char*>(data), size);
  (void)Decode(bytes);
  if (size < kHeaderBytes + kChecksumBytes || std::memcmp(data, "SSMSNAP", 8) != 0) return 0;

  // Resealed: the total length and the checksum made right, so that mutations reach the body.
  const uint64_t total = size;
  std::memcpy(bytes.data() + 16, &total, 8);
  const Digest checksum = Sha256Of(bytes.data(), size - kChecksumBytes);
  std::memcpy(bytes.data() + size - kChecksumBytes, checksum.data(), kChecksumBytes);
  auto snapshot = Decode(bytes);
  if (!snapshot.ok()) return 0;
  // Into the engine whose model the fingerprint names; else one the checksum's first byte picks.
  for (Target& t : Targets()) {
    if (DigestsEqual(snapshot->model_fingerprint, t.engine->model().fingerprint())) {
      Restore(t, *snapshot);
      return 0;
    }
  }
  const uint8_t choice = data[size - kChecksumBytes];
  Target& target = Targets()[choice & 1];
  if (!(choice & 2)) snapshot->model_fingerprint = target.engine->model().fingerprint();
  Restore(target, *snapshot);  // with the foreign fingerprint kept (bit 1), it must refuse
  return 0;
}
