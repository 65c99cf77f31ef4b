#include "clients/lib/stream_resampler.h"

#include <cmath>
#include <string>

#include "common/io/soxr_settings.h"

namespace ssm::client {

StatusOr<std::unique_ptr<StreamResampler>> StreamResampler::Create(int in_rate, int out_rate) {
  if (Status s = CheckResampleRates(in_rate, out_rate); !s.ok()) return s;
  soxr* resampler = nullptr;
  if (in_rate != out_rate) {
    const soxr_io_spec_t io = SoxrIoSpec();
    const soxr_quality_spec_t quality = SoxrQualitySpec();
    soxr_error_t error = nullptr;
    resampler = soxr_create(double(in_rate), double(out_rate), /*num_channels=*/1, &error, &io,
                            &quality, /*runtime_spec=*/nullptr);
    if (error) return InternalError(std::string("creating a libsoxr resampler failed: ") + error);
  }
  return std::unique_ptr<StreamResampler>(new StreamResampler(resampler, in_rate, out_rate));
}

StreamResampler::StreamResampler(soxr* resampler, int in_rate, int out_rate)
    : soxr_(resampler), in_rate_(in_rate), out_rate_(out_rate) {}

StreamResampler::~StreamResampler() {
  if (soxr_ != nullptr) soxr_delete(soxr_);
}

Status StreamResampler::Process(const float* in, size_t n, std::vector<float>* out) {
  if (flushed_) return FailedPreconditionError("StreamResampler::Process after Flush");
  if (soxr_ == nullptr) {
    out->insert(out->end(), in, in + n);
    return OkStatus();
  }
  return Drain(in, n, out);
}

Status StreamResampler::Flush(std::vector<float>* out) {
  if (flushed_) return OkStatus();
  flushed_ = true;
  return soxr_ == nullptr ? OkStatus() : Drain(nullptr, 0, out);
}

// Feeds `in` (nullptr: end of input) and collects output until libsoxr has none left for now.
Status StreamResampler::Drain(const float* in, size_t n, std::vector<float>* out) {
  // Room for the output `n` inputs complete, plus slack for what the filter held back.
  const size_t room = size_t(std::ceil(double(n) * out_rate_ / in_rate_)) + 1024;
  for (;;) {
    const size_t old_size = out->size();
    out->resize(old_size + room);
    size_t in_done = 0, out_done = 0;
    const soxr_error_t error =
        soxr_process(soxr_, in, n, &in_done, out->data() + old_size, room, &out_done);
    out->resize(old_size + out_done);
    if (error) return InternalError(std::string("resampling with libsoxr failed: ") + error);
    in += in_done;  // (nullptr + 0 stays nullptr: the flush goes on until the tail is out)
    n -= in_done;
    if (n == 0 && out_done < room) return OkStatus();
  }
}

}  // namespace ssm::client
