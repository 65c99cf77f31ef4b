// The audio readers (common/io/audio_file.*) on any bytes:
// - ReadAudio (libsndfile: WAV, FLAC, AIFF, OGG, ...) fails with INVALID_ARGUMENT, or gives a
//   positive rate and channel count; its samples written by WriteWav read back as their 16-bit
//   quantisation exactly (and a non-finite sample is refused by WriteWav);
// - ReadRawPcm gives exactly the file's s16le / f32le samples, or refuses a partial sample.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/io/audio_file.h"
#include "tests/fuzz/fuzz_util.h"

namespace ssm {
namespace {

constexpr size_t kMaxRewriteSamples = 1 << 18;  // keeps a slow input's WAV rewrite cheap

void CheckRewrite(const Audio& audio) {
  static fuzz::ScratchDir dir("audio");
  const std::string path = dir.File("rewrite.wav");
  const std::vector<float>& x = audio.samples;
  const bool finite = std::all_of(x.begin(), x.end(), [](float v) { return std::isfinite(v); });
  const Status written = WriteWav(path, x.data(), x.size(), audio.sample_rate);
  if (!finite) {
    FUZZ_CHECK(!written.ok(), "WriteWav wrote a non-finite sample");
    return;
  }
  FUZZ_CHECK(written.ok(), "{}", written.ToString());
  auto again = ReadAudio(path);
  FUZZ_CHECK(again.ok(), "the rewritten WAV does not read: {}", again.status().ToString());
  FUZZ_CHECK(again->sample_rate == audio.sample_rate && again->channels_in_file == 1);
  FUZZ_CHECK(again->samples.size() == x.size(), "{} samples written, {} read", x.size(),
             again->samples.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const float q = std::clamp(std::nearbyint(x[i] * 32768.0f), -32768.0f, 32767.0f) / 32768.0f;
    FUZZ_CHECK(again->samples[i] == q, "sample {}: {} written as {}, read {}", i, x[i], q,
               again->samples[i]);
  }
}

void CheckRaw(const std::string& path, const uint8_t* data, size_t size) {
  auto s16 = ReadRawPcm(path, "s16le");
  FUZZ_CHECK(s16.ok() == (size % 2 == 0), "{}", s16.status().ToString());
  if (s16.ok()) {
    FUZZ_CHECK(s16->size() == size / 2);
    for (size_t i = 0; i < s16->size(); ++i) {
      int16_t s;
      std::memcpy(&s, data + 2 * i, 2);
      FUZZ_CHECK((*s16)[i] == s / 32768.0f, "s16le sample {}", i);
    }
  }
  auto f32 = ReadRawPcm(path, "f32le");
  FUZZ_CHECK(f32.ok() == (size % 4 == 0), "{}", f32.status().ToString());
  if (f32.ok()) {
    FUZZ_CHECK(f32->size() == size / 4);
    FUZZ_CHECK(size == 0 || std::memcmp(f32->data(), data, size) == 0, "f32le samples differ");
  }
}

}  // namespace
}  // namespace ssm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ssm;
  static fuzz::InputFile input("audio");
  const std::string& path = input.Write(data, size);
  CheckRaw(path, data, size);
  auto audio = ReadAudio(path);
  if (!audio.ok()) {
    FUZZ_CHECK(audio.status().code() == StatusCode::kInvalidArgument, "{}",
               audio.status().ToString());
    return 0;
  }
  FUZZ_CHECK(audio->sample_rate >= 1 && audio->channels_in_file >= 1, "{} Hz, {} channels",
             audio->sample_rate, audio->channels_in_file);
  if (audio->samples.size() <= kMaxRewriteSamples) CheckRewrite(*audio);
  return 0;
}
