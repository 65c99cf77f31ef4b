#include <algorithm>

#include "kernels/base/worker_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace ssm::cpu {

void CausalConv(const SeqBatch& batch, const CausalConvArgs& a, int threads) {
  using simd::kLanes;
  using simd::Packet;
  const int E = a.channels, K = a.kernel;
  const int groups = (E + kLanes - 1) / kLanes;  // one packet of channels per task
  const int tasks = batch.n_seq * groups;
  ParallelFor(tasks > 1 ? threads : 1, tasks, [&](int64_t begin, int64_t end) {
    for (int task = int(begin); task < end; ++task) {
      const int s = task / groups, e0 = (task % groups) * kLanes, n = std::min(kLanes, E - e0);
      float* tail = a.tail.slot(batch.slots[s]) + e0;  // (K-1, E), oldest first
      const int r0 = batch.row_offsets[s], T = batch.row_offsets[s + 1] - r0;
      // Input of time j of this chunk (j < 0 reaches into the tail).
      auto input = [&](int j) {
        return j < 0 ? simd::LoadN(tail + size_t(K - 1 + j) * E, n)
                     : simd::LoadN(a.x + size_t(r0 + j) * a.ld_x + e0, n);
      };
      const Packet bias = simd::LoadN(a.bias + e0, n);
      for (int t = 0; t < T; ++t) {
        Packet acc = bias;
        for (int k = 0; k < K; ++k)
          acc = simd::Fma(simd::LoadN(a.w + size_t(k) * E + e0, n), input(t - K + 1 + k), acc);
        simd::StoreN(a.out + size_t(r0 + t) * a.ld_out + e0, simd::Silu(acc), n);
      }
      // New tail = the last K-1 inputs; read all before writing (old tail rows may be reused).
      Packet keep[8];
      for (int j = 0; j < K - 1; ++j) keep[j] = input(T - (K - 1) + j);
      for (int j = 0; j < K - 1; ++j) simd::StoreN(tail + size_t(j) * E, keep[j], n);
    }
  });
}

}  // namespace ssm::cpu
