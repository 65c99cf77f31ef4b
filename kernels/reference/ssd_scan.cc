#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/reference/ops.h"

namespace ssm::reference {

void SsdScan(const SeqBatch& batch, const SsdScanArgs& a) {
  const int H = a.heads, P = a.head_dim, N = a.d_state, heads_per_group = a.heads / a.groups;
  for (int s = 0; s < batch.n_seq; ++s) {
    float* S = a.state.slot(batch.slots[s]);  // (H, P, N)
    std::vector<double> st(S, S + size_t(H) * P * N);
    for (int r = batch.row_offsets[s]; r < batch.row_offsets[s + 1]; ++r) {
      for (int h = 0; h < H; ++h) {
        const int g = h / heads_per_group;
        const double dt = double(a.dt[size_t(r) * a.ld_dt + h]) + a.dt_bias[h];
        const double delta = dt > 20.0 ? dt : std::log1p(std::exp(dt));
        const double decay = std::exp(delta * a.A[h]);
        const float* B = a.B + size_t(r) * a.ld_bc + size_t(g) * N;
        const float* C = a.C + size_t(r) * a.ld_bc + size_t(g) * N;
        for (int p = 0; p < P; ++p) {
          const double x = a.x[size_t(r) * a.ld_x + size_t(h) * P + p];
          double* row = st.data() + (size_t(h) * P + p) * N;
          double y = 0;
          for (int n = 0; n < N; ++n) {
            row[n] = decay * row[n] + delta * x * B[n];
            y += row[n] * C[n];
          }
          a.out[size_t(r) * a.ld_out + size_t(h) * P + p] = float(y + a.D[h] * x);
        }
      }
    }
    for (size_t i = 0; i < st.size(); ++i) S[i] = float(st[i]);
  }
}

void GatedRmsNorm(const GatedRmsNormArgs& a, int rows) {
  const int C = a.channels, G = a.group_size;
  std::vector<double> v(G);
  for (int r = 0; r < rows; ++r) {
    const float* x = a.x + size_t(r) * a.ld_x;
    const float* z = a.z ? a.z + size_t(r) * a.ld_z : nullptr;
    float* out = a.out + size_t(r) * a.ld_out;
    auto gate = [&](int c) {
      const double zc = z[c];
      return zc / (1.0 + std::exp(-zc));
    };
    for (int c0 = 0; c0 < C; c0 += G) {
      double ss = 0;
      for (int i = 0; i < G; ++i) {
        v[i] = (!z || a.norm_before_gate) ? double(x[c0 + i]) : double(x[c0 + i]) * gate(c0 + i);
        ss += v[i] * v[i];
      }
      const double scale = 1.0 / std::sqrt(ss / G + double(a.eps));
      for (int i = 0; i < G; ++i) {
        double y = v[i] * scale * a.w[c0 + i];
        if (z && a.norm_before_gate) y *= gate(c0 + i);
        out[c0 + i] = float(y);
      }
    }
  }
}

}  // namespace ssm::reference

namespace ssm::reference {

// The chunked form term by term, in double: per head, the chunk's decays from the cumulative
// sums, the intra-chunk sum over s <= t, the read-out of the carried state, then the new state.
void SsdChunkedScan(const SeqBatch& batch, const SsdScanArgs& a, int chunk) {
  const int H = a.heads, P = a.head_dim, N = a.d_state, heads_per_group = a.heads / a.groups;
  for (int s = 0; s < batch.n_seq; ++s) {
    float* S = a.state.slot(batch.slots[s]);  // (H, P, N)
    std::vector<double> st(S, S + size_t(H) * P * N);
    const int first = batch.row_offsets[s], last = batch.row_offsets[s + 1];
    for (int c0 = first; c0 < last; c0 += chunk) {
      const int n = std::min(chunk, last - c0);
      for (int h = 0; h < H; ++h) {
        const int g = h / heads_per_group;
        std::vector<double> delta(n), cum(n);
        for (int t = 0; t < n; ++t) {
          const double dt = double(a.dt[size_t(c0 + t) * a.ld_dt + h]) + a.dt_bias[h];
          delta[t] = dt > 20.0 ? dt : std::log1p(std::exp(dt));
          cum[t] = (t > 0 ? cum[t - 1] : 0.0) + delta[t] * a.A[h];
        }
        auto B = [&](int t, int k) { return double(a.B[size_t(c0 + t) * a.ld_bc + g * N + k]); };
        auto C = [&](int t, int k) { return double(a.C[size_t(c0 + t) * a.ld_bc + g * N + k]); };
        auto X = [&](int t, int p) { return double(a.x[size_t(c0 + t) * a.ld_x + h * P + p]); };
        double* Sh = st.data() + size_t(h) * P * N;
        std::vector<double> w(size_t(n) * n);  // w[t, u] = exp(cum_t - cum_u) delta_u C_t.B_u
        for (int t = 0; t < n; ++t) {
          for (int u = 0; u <= t; ++u) {
            double cb = 0;
            for (int k = 0; k < N; ++k) cb += C(t, k) * B(u, k);
            w[size_t(t) * n + u] = std::exp(cum[t] - cum[u]) * delta[u] * cb;
          }
        }
        for (int t = 0; t < n; ++t) {
          for (int p = 0; p < P; ++p) {
            double y = 0;
            for (int u = 0; u <= t; ++u) y += w[size_t(t) * n + u] * X(u, p);
            double carried = 0;
            for (int k = 0; k < N; ++k) carried += Sh[size_t(p) * N + k] * C(t, k);
            y += std::exp(cum[t]) * carried + a.D[h] * X(t, p);
            a.out[size_t(c0 + t) * a.ld_out + h * P + p] = float(y);
          }
        }
        const double end = cum[n - 1];
        for (int p = 0; p < P; ++p) {
          for (int k = 0; k < N; ++k) {
            double v = std::exp(end) * Sh[size_t(p) * N + k];
            for (int u = 0; u < n; ++u) v += std::exp(end - cum[u]) * delta[u] * X(u, p) * B(u, k);
            Sh[size_t(p) * N + k] = v;
          }
        }
      }
    }
    for (size_t i = 0; i < st.size(); ++i) S[i] = float(st[i]);
  }
}

}  // namespace ssm::reference
