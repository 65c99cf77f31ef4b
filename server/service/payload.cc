#include "server/service/payload.h"

#include <fmt/format.h>

#include <cstdint>
#include <cstring>

namespace ssm {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "payload decoding assumes a little-endian host");

const char* PayloadFormatName(PayloadFormat format) {
  switch (format) {
    case PayloadFormat::kPcmS16le:
      return "PCM_S16LE";
    case PayloadFormat::kPcmF32le:
      return "PCM_F32LE";
    case PayloadFormat::kFramesF32le:
      return "FRAMES_F32LE";
    default:
      return "UNSPECIFIED";
  }
}

Status CheckPayloadFormat(PayloadFormat format, int sample_rate, const ModelConfig& model) {
  const bool audio = model.frontend.is_log_mel();
  switch (format) {
    case PayloadFormat::kPcmS16le:
    case PayloadFormat::kPcmF32le:
      if (!audio)
        return InvalidArgumentError(fmt::format(
            "format {} is audio, but this model takes frames of {} floats (frontend none); "
            "send FRAMES_F32LE",
            PayloadFormatName(format), model.d_in));
      if (sample_rate != 0 && sample_rate != model.frontend.sample_rate)
        return InvalidArgumentError(fmt::format(
            "sample_rate {} Hz does not match the model's {} Hz; resample the audio or send 0",
            sample_rate, model.frontend.sample_rate));
      return OkStatus();
    case PayloadFormat::kFramesF32le:
      if (audio)
        return InvalidArgumentError(fmt::format(
            "format FRAMES_F32LE is frames, but this model takes audio at {} Hz (frontend "
            "log_mel); send PCM_S16LE or PCM_F32LE",
            model.frontend.sample_rate));
      return OkStatus();
    default:
      return InvalidArgumentError(
          fmt::format("format {} is not supported; set StreamOpen.format to {}", int(format),
                      audio ? "PCM_S16LE or PCM_F32LE" : "FRAMES_F32LE"));
  }
}

Status DecodePayload(PayloadFormat format, const std::string& bytes, int frame_dim,
                     std::vector<float>* values) {
  const size_t n = bytes.size();
  switch (format) {
    case PayloadFormat::kPcmS16le: {
      if (n % 2 != 0)
        return InvalidArgumentError(fmt::format(
            "payload of {} bytes is not a whole number of PCM_S16LE samples (2 bytes each)", n));
      values->resize(n / 2);
      for (size_t i = 0; i < n / 2; ++i) {
        int16_t s;
        std::memcpy(&s, bytes.data() + 2 * i, 2);
        (*values)[i] = float(s) / 32768.0f;
      }
      return OkStatus();
    }
    case PayloadFormat::kPcmF32le:
    case PayloadFormat::kFramesF32le: {
      if (format == PayloadFormat::kFramesF32le && frame_dim < 1)  // n % 0 would trap
        return InvalidArgumentError(
            fmt::format("frame size {}: a frame holds at least 1 float", frame_dim));
      const size_t unit = format == PayloadFormat::kPcmF32le ? 4 : 4 * size_t(frame_dim);
      if (n % unit != 0)
        return InvalidArgumentError(
            format == PayloadFormat::kPcmF32le
                ? fmt::format("payload of {} bytes is not a whole number of PCM_F32LE samples "
                              "(4 bytes each)",
                              n)
                : fmt::format("payload of {} bytes is not a whole number of frames ({} floats "
                              "= {} bytes each)",
                              n, frame_dim, unit));
      values->resize(n / 4);
      if (n > 0) std::memcpy(values->data(), bytes.data(), n);
      return OkStatus();
    }
    default:
      return InvalidArgumentError(fmt::format("unsupported payload format {}", int(format)));
  }
}

}  // namespace ssm
