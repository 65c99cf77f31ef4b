// Float samples or frames <-> StreamChunk payload bytes (docs/design.md §3: s16 is s / 32768).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "common/status.h"
#include "ssmserve/v1/ssmserve.pb.h"

namespace ssm::client {

// Bytes one value occupies on the wire: 2 for PCM_S16LE, 4 for the float formats, 0 for
// UNSPECIFIED.
size_t BytesPerValue(ssmserve::v1::SampleFormat format);

// Appends `n` values to `out`, little-endian. PCM_S16LE rounds x · 32768 to the nearest integer
// and clips to [-32768, 32767], so values k / 32768 (what 16-bit files decode to) pass exactly.
// A non-finite value is INVALID_ARGUMENT naming its index, and leaves `out` unchanged.
Status EncodePayload(const float* values, size_t n, ssmserve::v1::SampleFormat format,
                     std::string* out);

// True when every value is k / 32768 for an integer k in [-32768, 32767], i.e. PCM_S16LE
// carries the values without loss (16-bit files that were not resampled or mixed).
bool FitsPcmS16Exactly(const float* values, size_t n);

// The wire format for a tool's --format flag: "auto" (PCM_S16LE when `fits_s16`, else
// PCM_F32LE), "s16", "f32"; frame models (`audio_model` false) always use FRAMES_F32LE and
// accept only "auto".
StatusOr<ssmserve::v1::SampleFormat> ChoosePayloadFormat(const std::string& flag, bool audio_model,
                                                         bool fits_s16);

// The inverse, as the server reads payloads; `bytes` must hold a whole number of values.
StatusOr<std::vector<float>> DecodePayload(const std::string& bytes,
                                           ssmserve::v1::SampleFormat format);

}  // namespace ssm::client
