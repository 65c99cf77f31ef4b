// Zero-filled, 64-byte aligned host memory: the Buffer of the reference and cpu backends.
#pragma once

#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/backend.h"

namespace ssm {

class HostBuffer final : public Buffer {
 public:
  explicit HostBuffer(size_t floats) : size_(floats) {
    const size_t bytes = ((floats * sizeof(float) + 63) / 64) * 64;
    data_ = static_cast<float*>(std::aligned_alloc(64, bytes > 0 ? bytes : 64));
    if (!data_) throw std::bad_alloc();
    std::memset(data_, 0, bytes);
  }
  ~HostBuffer() override { std::free(data_); }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  float* data() override { return data_; }
  const float* data() const { return data_; }
  size_t size() const override { return size_; }

 private:
  float* data_ = nullptr;
  size_t size_ = 0;
};

// Memory ops shared by the backends whose memory is the host's.
class HostMemoryBackend : public Backend {
 public:
  std::unique_ptr<Buffer> Allocate(size_t floats) override {
    return std::make_unique<HostBuffer>(floats);
  }
  // n == 0 copies nothing, and then either pointer may be null (an empty vector's data()),
  // which memcpy does not allow.
  void CopyToBackend(float* dst, const float* src, size_t n) override {
    if (n > 0) std::memcpy(dst, src, n * sizeof(float));
  }
  void CopyToHost(float* dst, const float* src, size_t n) override {
    if (n > 0) std::memcpy(dst, src, n * sizeof(float));
  }
  void Fill(float* dst, size_t n, float value) override {
    for (size_t i = 0; i < n; ++i) dst[i] = value;
  }
};

}  // namespace ssm
