// Chunk payload decoding (server/service/payload.*) for every sample format, valid or not, and
// any frame size a model may have (d_in in [1, 65536]): DecodePayload succeeds exactly when the
// bytes are a whole number of samples or frames, then replaces the values with the bytes'
// samples (s16 / 32768, or the float32 bits unchanged); CheckPayloadFormat accepts exactly the
// formats and rates a model reads. The input: format, frame size and sample rate, then the bytes.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstring>

#include "server/service/payload.h"
#include "tests/fuzz/fuzz_util.h"

namespace ssm {
namespace {

constexpr int kMaxFrameDim = 1 << 16;  // ModelConfig's limit on d_in

void CheckDecode(PayloadFormat format, const std::string& bytes, int frame_dim) {
  std::vector<float> values(3, -7.0f);  // replaced on success, whatever it held
  const Status status = DecodePayload(format, bytes, frame_dim, &values);
  const size_t n = bytes.size();
  size_t unit = 0;  // bytes per sample or frame; 0: not a format
  if (format == PayloadFormat::kPcmS16le) unit = 2;
  if (format == PayloadFormat::kPcmF32le) unit = 4;
  if (format == PayloadFormat::kFramesF32le) unit = 4 * size_t(frame_dim);
  const bool whole = unit != 0 && n % unit == 0;
  FUZZ_CHECK(status.ok() == whole, "format {}, {} bytes, frame_dim {}: {}", int(format), n,
             frame_dim, status.ToString());
  if (!status.ok()) {
    FUZZ_CHECK(status.code() == StatusCode::kInvalidArgument && !status.message().empty());
    return;
  }
  if (format == PayloadFormat::kPcmS16le) {
    FUZZ_CHECK(values.size() == n / 2, "{} values from {} bytes", values.size(), n);
    for (size_t i = 0; i < values.size(); ++i) {
      int16_t s;
      std::memcpy(&s, bytes.data() + 2 * i, 2);
      FUZZ_CHECK(values[i] == s / 32768.0f, "sample {}", i);
      FUZZ_CHECK(values[i] >= -1.0f && values[i] < 1.0f);
    }
  } else {
    FUZZ_CHECK(values.size() == n / 4, "{} values from {} bytes", values.size(), n);
    FUZZ_CHECK(n == 0 || std::memcmp(values.data(), bytes.data(), n) == 0, "float bits changed");
    if (format == PayloadFormat::kFramesF32le) FUZZ_CHECK(values.size() % size_t(frame_dim) == 0);
  }
}

void CheckFormat(PayloadFormat format, int sample_rate, bool log_mel, int model_rate) {
  ModelConfig model;
  model.frontend.type = log_mel ? "log_mel" : "none";
  model.frontend.sample_rate = model_rate;
  const Status status = CheckPayloadFormat(format, sample_rate, model);
  const bool pcm = format == PayloadFormat::kPcmS16le || format == PayloadFormat::kPcmF32le;
  const bool expected = (pcm && log_mel && (sample_rate == 0 || sample_rate == model_rate)) ||
                        (format == PayloadFormat::kFramesF32le && !log_mel);
  FUZZ_CHECK(status.ok() == expected, "format {} at {} Hz, log_mel {} at {} Hz: {}", int(format),
             sample_rate, log_mel, model_rate, status.ToString());
  FUZZ_CHECK(status.ok() || status.code() == StatusCode::kInvalidArgument);
  FUZZ_CHECK(std::strlen(PayloadFormatName(format)) > 0);
}

}  // namespace
}  // namespace ssm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ssm;
  FuzzedDataProvider in(data, size);
  const auto format = static_cast<PayloadFormat>(in.ConsumeIntegralInRange<int>(-1, 4));
  // Mostly small frames, which a short payload can fill; sometimes any size a model may have.
  const int frame_dim = in.ConsumeBool() ? in.ConsumeIntegralInRange<int>(1, 16)
                                         : in.ConsumeIntegralInRange<int>(1, kMaxFrameDim);
  const bool log_mel = in.ConsumeBool();
  const int model_rate = in.ConsumeIntegralInRange<int>(1, 1000000);
  const int sample_rate = in.ConsumeBool() ? model_rate : in.ConsumeIntegral<int>();
  const std::string bytes = in.ConsumeRemainingBytesAsString();
  CheckDecode(format, bytes, frame_dim);
  CheckFormat(format, sample_rate, log_mel, model_rate);
  return 0;
}
