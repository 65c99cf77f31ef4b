// Pull-style input for the offline path: a file, a memory span or a generator.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace ssm {

class InputSource {
 public:
  virtual ~InputSource() = default;
  // Copies up to max_values next input values to dst; returns how many (0 at the end).
  virtual size_t Read(float* dst, size_t max_values) = 0;
};

// Reads from memory the caller keeps alive.
class SpanSource final : public InputSource {
 public:
  SpanSource(const float* data, size_t size) : data_(data), size_(size) {}
  size_t Read(float* dst, size_t max_values) override {
    const size_t n = std::min(max_values, size_ - pos_);
    std::memcpy(dst, data_ + pos_, n * sizeof(float));
    pos_ += n;
    return n;
  }

 private:
  const float* data_;
  size_t size_;
  size_t pos_ = 0;
};

}  // namespace ssm
