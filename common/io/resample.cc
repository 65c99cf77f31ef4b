#include "common/io/resample.h"

#include <cmath>
#include <string>

#include "common/io/soxr_settings.h"

namespace ssm {

StatusOr<std::vector<float>> Resample(const std::vector<float>& samples, int in_rate,
                                      int out_rate) {
  if (Status s = CheckResampleRates(in_rate, out_rate); !s.ok()) return s;
  if (in_rate == out_rate || samples.empty()) return samples;
  const size_t out_len =
      size_t(std::llround(double(samples.size()) * double(out_rate) / double(in_rate)));
  std::vector<float> out(out_len);
  const soxr_io_spec_t io = SoxrIoSpec();
  const soxr_quality_spec_t quality = SoxrQualitySpec();
  size_t in_done = 0, out_done = 0;
  const soxr_error_t error =
      soxr_oneshot(double(in_rate), double(out_rate), /*num_channels=*/1, samples.data(),
                   samples.size(), &in_done, out.data(), out.size(), &out_done, &io, &quality,
                   /*runtime_spec=*/nullptr);
  if (error) return InternalError(std::string("resampling with libsoxr failed: ") + error);
  out.resize(out_done);
  return out;
}

}  // namespace ssm
