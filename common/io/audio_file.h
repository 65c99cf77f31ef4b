// Audio files through libsndfile (WAV, FLAC, OGG, ... whatever it reads) and headerless raw PCM.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/status.h"

namespace ssm {

struct Audio {
  int sample_rate = 0;         // Hz, as stored in the file (no resampling)
  int channels_in_file = 0;    // before the down-mix
  std::vector<float> samples;  // mono; integer PCM is scaled as s / 2^(bits-1), e.g. s16 / 32768
};

// Reads a whole audio file; several channels are down-mixed to mono by averaging.
StatusOr<Audio> ReadAudio(const std::string& path);

// Writes mono 16-bit PCM WAV: samples are scaled by 32768, rounded and clipped to the int16 range,
// so values k / 32768 read back exactly. Non-finite samples are an error.
Status WriteWav(const std::string& path, const float* samples, size_t n, int sample_rate);

// Reads headerless mono PCM: "s16le" (converted as s / 32768) or "f32le".
StatusOr<std::vector<float>> ReadRawPcm(const std::string& path, const std::string& format);

}  // namespace ssm
