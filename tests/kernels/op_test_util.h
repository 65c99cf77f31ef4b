// Shared helpers of the op tests: random data and the normalised error measure.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"

namespace ssm::testing {

// Per-op tolerances on NormalizedMaxError (float32 fast path vs float64 reference).
constexpr double kLinearMaxRelErr = 1e-5;
constexpr double kNormMaxRelErr = 1e-5;
constexpr double kConvMaxRelErr = 1e-5;
constexpr double kScanMaxRelErr = 1e-5;

// max_i |a_i - b_i| / max_i |b_i|: the error relative to the tensor's scale (b is the truth).
inline double NormalizedMaxError(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return a.size() == b.size() ? diff / scale : INFINITY;
}

class Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  std::vector<float> Uniform(size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen_);
    return v;
  }
  std::vector<float> Normal(size_t n, float stddev = 1.0f) {
    std::normal_distribution<float> d(0.0f, stddev);
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen_);
    return v;
  }
  int Int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen_); }
  std::mt19937_64& gen() { return gen_; }

 private:
  std::mt19937_64 gen_;
};

// A varlen batch description that owns its arrays.
struct OwnedBatch {
  std::vector<int> offsets{0};
  std::vector<int> slots;
  void Add(int rows, int slot) {
    offsets.push_back(offsets.back() + rows);
    slots.push_back(slot);
  }
  SeqBatch view() const { return {int(slots.size()), offsets.data(), slots.data()}; }
  int rows() const { return offsets.back(); }
};

// Seeds differ per run (printed by the test on failure) unless SSM_TEST_SEED is set.
inline uint64_t TestSeed() {
  if (const char* s = std::getenv("SSM_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

}  // namespace ssm::testing
