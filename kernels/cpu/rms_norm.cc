#include <cmath>

#include "kernels/base/worker_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace ssm::cpu {

void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y, int threads) {
  using simd::kLanes;
  ParallelFor(rows >= 64 ? threads : 1, rows, [&](int64_t begin, int64_t end) {
    for (int r = int(begin); r < end; ++r) {
      const float* xr = x + size_t(r) * dim;
      float* yr = y + size_t(r) * dim;
      simd::Packet ss = simd::Zero();
      for (int i = 0; i < dim; i += kLanes) {
        const simd::Packet v = simd::LoadN(xr + i, std::min(kLanes, dim - i));
        ss = simd::Fma(v, v, ss);
      }
      const float scale = 1.0f / std::sqrt(simd::ReduceSum(ss) / float(dim) + eps);
      const simd::Packet s = simd::Set1(scale);
      for (int i = 0; i < dim; i += kLanes) {
        const int n = std::min(kLanes, dim - i);
        simd::StoreN(yr + i, simd::Mul(simd::Mul(simd::LoadN(xr + i, n), s), simd::LoadN(w + i, n)),
                     n);
      }
    }
  });
}

}  // namespace ssm::cpu
