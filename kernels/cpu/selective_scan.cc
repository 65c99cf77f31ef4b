#include <algorithm>
#include <vector>

#include "kernels/base/worker_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace ssm::cpu {

// Each task scans one sequence over one packet of channels: its state H[:, e0:e0+lanes] is read
// once into a local array, updated for every row of the chunk, and written back once.
void SelectiveScan(const SeqBatch& batch, const SelectiveScanArgs& a, int threads) {
  using simd::kLanes;
  using simd::Packet;
  const int E = a.channels, N = a.d_state;
  const int groups = (E + kLanes - 1) / kLanes;
  const int tasks = batch.n_seq * groups;
  ParallelFor(tasks > 1 ? threads : 1, tasks, [&](int64_t begin, int64_t end) {
    std::vector<Packet> h(N);  // per-thread state of one channel packet
    for (int task = int(begin); task < end; ++task) {
      const int s = task / groups, e0 = (task % groups) * kLanes, n = std::min(kLanes, E - e0);
      float* H = a.state.slot(batch.slots[s]) + e0;  // (N, E)
      for (int i = 0; i < N; ++i) h[i] = simd::LoadN(H + size_t(i) * E, n);
      const Packet D = simd::LoadN(a.D + e0, n);
      for (int r = batch.row_offsets[s]; r < batch.row_offsets[s + 1]; ++r) {
        const Packet delta = simd::Softplus(simd::LoadN(a.dt + size_t(r) * a.ld_dt + e0, n));
        const Packet u = simd::LoadN(a.u + size_t(r) * a.ld_u + e0, n);
        const Packet du = simd::Mul(delta, u);
        const float* B = a.B + size_t(r) * a.ld_bc;
        const float* C = a.C + size_t(r) * a.ld_bc;
        // Two partial sums of H.C halve the FMA dependency chain over the state.
        Packet y_even = simd::Zero(), y_odd = simd::Zero();
        for (int i = 0; i < N; ++i) {
          const Packet dA =
              simd::ExpNonPositive(simd::Mul(delta, simd::LoadN(a.A + size_t(i) * E + e0, n)));
          h[i] = simd::Fma(dA, h[i], simd::Mul(du, simd::Set1(B[i])));
          Packet& y = (i & 1) ? y_odd : y_even;
          y = simd::Fma(h[i], simd::Set1(C[i]), y);
        }
        const Packet y = simd::Add(y_even, y_odd);
        const Packet z = simd::LoadN(a.z + size_t(r) * a.ld_z + e0, n);
        simd::StoreN(a.out + size_t(r) * a.ld_out + e0,
                     simd::Mul(simd::Fma(D, u, y), simd::Silu(z)), n);
      }
      for (int i = 0; i < N; ++i) simd::StoreN(H + size_t(i) * E, h[i], n);
    }
  });
}

}  // namespace ssm::cpu
