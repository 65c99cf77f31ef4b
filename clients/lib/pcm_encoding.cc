#include "clients/lib/pcm_encoding.h"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ssm::client {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "payloads are copied as little-endian");

using ssmserve::v1::SampleFormat;

int16_t ToS16(float x) {
  const float scaled = std::nearbyint(x * 32768.0f);
  if (scaled >= 32767.0f) return 32767;
  if (scaled <= -32768.0f) return -32768;
  return static_cast<int16_t>(scaled);
}

}  // namespace

size_t BytesPerValue(SampleFormat format) {
  switch (format) {
    case ssmserve::v1::SAMPLE_FORMAT_PCM_S16LE:
      return 2;
    case ssmserve::v1::SAMPLE_FORMAT_PCM_F32LE:
    case ssmserve::v1::SAMPLE_FORMAT_FRAMES_F32LE:
      return 4;
    default:
      return 0;
  }
}

Status EncodePayload(const float* values, size_t n, SampleFormat format, std::string* out) {
  const size_t width = BytesPerValue(format);
  if (width == 0)
    return InvalidArgumentError(
        "payload format is unspecified; pick PCM_S16LE, PCM_F32LE or "
        "FRAMES_F32LE");
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i]))
      return InvalidArgumentError("value " + std::to_string(i) + " of the chunk is " +
                                  (std::isnan(values[i]) ? "NaN" : "infinite") +
                                  "; the server accepts finite values only");
  }
  const size_t start = out->size();
  out->resize(start + n * width);
  char* dst = out->data() + start;
  if (width == 4) {
    std::memcpy(dst, values, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) {
      const int16_t s = ToS16(values[i]);
      std::memcpy(dst + 2 * i, &s, 2);
    }
  }
  return OkStatus();
}

bool FitsPcmS16Exactly(const float* values, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float scaled = values[i] * 32768.0f;  // exact: a power-of-two scale
    if (!(scaled >= -32768.0f && scaled <= 32767.0f) || scaled != std::nearbyint(scaled))
      return false;
  }
  return true;
}

StatusOr<SampleFormat> ChoosePayloadFormat(const std::string& flag, bool audio_model,
                                           bool fits_s16) {
  if (!audio_model) {
    if (flag != "auto")
      return InvalidArgumentError("--format " + flag +
                                  " applies to audio models only; this model takes frames");
    return ssmserve::v1::SAMPLE_FORMAT_FRAMES_F32LE;
  }
  if (flag == "s16") return ssmserve::v1::SAMPLE_FORMAT_PCM_S16LE;
  if (flag == "f32") return ssmserve::v1::SAMPLE_FORMAT_PCM_F32LE;
  if (flag == "auto")
    return fits_s16 ? ssmserve::v1::SAMPLE_FORMAT_PCM_S16LE : ssmserve::v1::SAMPLE_FORMAT_PCM_F32LE;
  return InvalidArgumentError("--format must be auto, s16 or f32, not '" + flag + "'");
}

StatusOr<std::vector<float>> DecodePayload(const std::string& bytes, SampleFormat format) {
  const size_t width = BytesPerValue(format);
  if (width == 0) return InvalidArgumentError("payload format is unspecified");
  if (bytes.size() % width != 0)
    return InvalidArgumentError("payload of " + std::to_string(bytes.size()) +
                                " bytes is not a whole number of " + std::to_string(width) +
                                "-byte values");
  std::vector<float> values(bytes.size() / width);
  if (width == 4) {
    std::memcpy(values.data(), bytes.data(), bytes.size());
  } else {
    for (size_t i = 0; i < values.size(); ++i) {
      int16_t s;
      std::memcpy(&s, bytes.data() + 2 * i, 2);
      values[i] = float(s) / 32768.0f;
    }
  }
  return values;
}

}  // namespace ssm::client
