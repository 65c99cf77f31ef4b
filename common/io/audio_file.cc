#include "common/io/audio_file.h"

#include <fmt/format.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "ssmserve assumes a little-endian host");

namespace ssm {
namespace {

constexpr sf_count_t kBlockFrames = 4096;
// The header's frame count is only a hint: a 100-byte FLAC can claim 2^36 frames. Reserve at most
// this many samples (4 MiB) up front; a longer file grows the vector as it is read.
constexpr sf_count_t kMaxReserveFrames = sf_count_t(1) << 20;
constexpr float kPcm16Scale = 32768.0f;  // docs/design.md §3: PCM S16 input is s / 32768

struct SndfileCloser {
  void operator()(SNDFILE* f) const { sf_close(f); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

}  // namespace

StatusOr<Audio> ReadAudio(const std::string& path) {
  SF_INFO info;
  std::memset(&info, 0, sizeof info);
  SndfilePtr file(sf_open(path.c_str(), SFM_READ, &info));
  if (file == nullptr) {
    std::ifstream exists(path);
    const std::string message =
        fmt::format("{}: cannot read as audio ({})", path, sf_strerror(nullptr));
    return exists ? InvalidArgumentError(message) : NotFoundError(message);
  }
  if (info.channels < 1 || info.samplerate < 1) {
    return InvalidArgumentError(fmt::format("{}: invalid audio header ({} channels, {} Hz)", path,
                                            info.channels, info.samplerate));
  }
  Audio audio;
  audio.sample_rate = info.samplerate;
  audio.channels_in_file = info.channels;
  if (info.frames > 0) audio.samples.reserve(std::min(info.frames, kMaxReserveFrames));

  // Read block by block rather than trusting the frame count (unknown for some streams).
  std::vector<float> block(static_cast<size_t>(kBlockFrames) * info.channels);
  for (;;) {
    const sf_count_t got = sf_readf_float(file.get(), block.data(), kBlockFrames);
    if (got <= 0) break;
    for (sf_count_t f = 0; f < got; ++f) {
      const float* frame = block.data() + f * info.channels;
      float sum = 0;
      for (int c = 0; c < info.channels; ++c) sum += frame[c];
      audio.samples.push_back(sum / info.channels);
    }
  }
  if (sf_error(file.get()) != SF_ERR_NO_ERROR) {
    return InvalidArgumentError(fmt::format("{}: read error ({})", path, sf_strerror(file.get())));
  }
  return audio;
}

Status WriteWav(const std::string& path, const float* samples, size_t n, int sample_rate) {
  if (sample_rate < 1) {
    return InvalidArgumentError(fmt::format("{}: invalid sample rate {}", path, sample_rate));
  }
  std::vector<int16_t> pcm(n);
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(samples[i])) {
      return InvalidArgumentError(
          fmt::format("{}: sample {} is {}, expected a finite value", path, i, samples[i]));
    }
    const float scaled = std::nearbyint(samples[i] * kPcm16Scale);
    pcm[i] = static_cast<int16_t>(std::clamp(scaled, -32768.0f, 32767.0f));
  }
  SF_INFO info;
  std::memset(&info, 0, sizeof info);
  info.samplerate = sample_rate;
  info.channels = 1;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SndfilePtr file(sf_open(path.c_str(), SFM_WRITE, &info));
  if (file == nullptr) {
    return InvalidArgumentError(fmt::format("{}: cannot create ({})", path, sf_strerror(nullptr)));
  }
  if (sf_write_short(file.get(), pcm.data(), static_cast<sf_count_t>(n)) !=
      static_cast<sf_count_t>(n)) {
    return InternalError(fmt::format("{}: write failed ({})", path, sf_strerror(file.get())));
  }
  return OkStatus();
}

StatusOr<std::vector<float>> ReadRawPcm(const std::string& path, const std::string& format) {
  size_t sample_bytes;
  if (format == "s16le") {
    sample_bytes = 2;
  } else if (format == "f32le") {
    sample_bytes = 4;
  } else {
    return InvalidArgumentError(
        fmt::format("unknown raw PCM format \"{}\" (expected s16le or f32le)", format));
  }
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return NotFoundError(fmt::format("{}: cannot open", path));
  const std::streamoff end = in.tellg();
  if (end < 0) return InvalidArgumentError(fmt::format("{}: not a readable file", path));
  const size_t bytes = static_cast<size_t>(end);
  if (bytes % sample_bytes != 0) {
    return InvalidArgumentError(
        fmt::format("{}: {} bytes is not a whole number of {}-byte {} samples", path, bytes,
                    sample_bytes, format));
  }
  in.seekg(0);
  std::vector<float> samples(bytes / sample_bytes);
  if (sample_bytes == 4) {
    in.read(reinterpret_cast<char*>(samples.data()), bytes);
  } else {
    std::vector<int16_t> pcm(samples.size());
    in.read(reinterpret_cast<char*>(pcm.data()), bytes);
    for (size_t i = 0; i < pcm.size(); ++i) samples[i] = pcm[i] / kPcm16Scale;
  }
  if (!in) return InvalidArgumentError(fmt::format("{}: read error", path));
  return samples;
}

}  // namespace ssm
