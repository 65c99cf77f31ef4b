#include <cmath>
#include <vector>

#include "kernels/reference/ops.h"

namespace ssm::reference {

void CausalConv(const SeqBatch& batch, const CausalConvArgs& a) {
  const int E = a.channels, K = a.kernel;
  for (int s = 0; s < batch.n_seq; ++s) {
    float* tail = a.tail.slot(batch.slots[s]);  // (K-1, E), oldest first
    const int r0 = batch.row_offsets[s], T = batch.row_offsets[s + 1] - r0;
    // The sequence's inputs with its history in front: hist[j] = x_{j - (K-1)}.
    std::vector<float> hist(size_t(K - 1 + T) * E);
    for (int j = 0; j < K - 1; ++j)
      for (int e = 0; e < E; ++e) hist[size_t(j) * E + e] = tail[j * E + e];
    for (int t = 0; t < T; ++t)
      for (int e = 0; e < E; ++e) hist[size_t(K - 1 + t) * E + e] = a.x[(r0 + t) * a.ld_x + e];
    for (int t = 0; t < T; ++t) {
      for (int e = 0; e < E; ++e) {
        double c = a.bias[e];
        for (int k = 0; k < K; ++k) c += double(a.w[k * E + e]) * hist[size_t(t + k) * E + e];
        a.out[(r0 + t) * a.ld_out + e] = float(c / (1.0 + std::exp(-c)));
      }
    }
    for (int j = 0; j < K - 1; ++j)
      for (int e = 0; e < E; ++e) tail[j * E + e] = hist[size_t(T + j) * E + e];
  }
}

}  // namespace ssm::reference
