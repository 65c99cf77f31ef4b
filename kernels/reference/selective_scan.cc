#include <cmath>
#include <vector>

#include "kernels/reference/ops.h"

namespace ssm::reference {

void SelectiveScan(const SeqBatch& batch, const SelectiveScanArgs& a) {
  const int E = a.channels, N = a.d_state;
  for (int s = 0; s < batch.n_seq; ++s) {
    float* H = a.state.slot(batch.slots[s]);  // (N, E)
    std::vector<double> h(H, H + size_t(N) * E);
    for (int r = batch.row_offsets[s]; r < batch.row_offsets[s + 1]; ++r) {
      for (int e = 0; e < E; ++e) {
        const double dt = a.dt[r * a.ld_dt + e];
        const double delta = dt > 20.0 ? dt : std::log1p(std::exp(dt));
        const double u = a.u[r * a.ld_u + e];
        double y = 0;
        for (int n = 0; n < N; ++n) {
          double& hn = h[size_t(n) * E + e];
          hn = std::exp(delta * a.A[n * E + e]) * hn + delta * u * a.B[r * a.ld_bc + n];
          y += hn * a.C[r * a.ld_bc + n];
        }
        const double z = a.z[r * a.ld_z + e];
        a.out[r * a.ld_out + e] = float((y + a.D[e] * u) * (z / (1.0 + std::exp(-z))));
      }
    }
    for (size_t i = 0; i < h.size(); ++i) H[i] = float(h[i]);
  }
}

}  // namespace ssm::reference
