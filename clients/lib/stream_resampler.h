// Sample-rate conversion of an unbounded mono signal, piece by piece (libsoxr's streaming API).
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "common/status.h"

struct soxr;  // libsoxr's resampler (soxr.h)

namespace ssm::client {

// Same quality as ssm::Resample (common/io/resample.h: libsoxr HQ, linear phase), and the same
// samples: feeding a signal in any split and then Flush() gives what Resample gives for the
// whole signal. Not thread-safe.
class StreamResampler {
 public:
  // INVALID_ARGUMENT unless both rates are positive.
  static StatusOr<std::unique_ptr<StreamResampler>> Create(int in_rate, int out_rate);
  ~StreamResampler();

  // Appends to `out` the output samples that `in[0, n)` completes (the filter holds back a few
  // milliseconds until more input or Flush arrives).
  Status Process(const float* in, size_t n, std::vector<float>* out);
  // End of input: appends the held-back tail. Process must not be called afterwards.
  Status Flush(std::vector<float>* out);

  int in_rate() const { return in_rate_; }
  int out_rate() const { return out_rate_; }

 private:
  StreamResampler(soxr* resampler, int in_rate, int out_rate);
  Status Drain(const float* in, size_t n, std::vector<float>* out);

  soxr* soxr_;  // nullptr when the rates are equal: samples pass through
  int in_rate_, out_rate_;
  bool flushed_ = false;
};

}  // namespace ssm::client
