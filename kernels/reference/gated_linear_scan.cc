#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/reference/ops.h"

namespace ssm::reference {
namespace {

double Map(FeatureMap f, double x) {
  switch (f) {
    case FeatureMap::kIdentity:
      return x;
    case FeatureMap::kRelu:
      return x > 0 ? x : 0.0;
    case FeatureMap::kEluPlusOne:
      return x > 0 ? x + 1.0 : std::exp(x);
  }
  return x;
}

double LogSigmoid(double x) {
  return x < 0 ? x - std::log1p(std::exp(x)) : -std::log1p(std::exp(-x));
}

// One row's inputs of head h, mapped and scaled, and its log decay per key.
struct RowInputs {
  std::vector<double> q, k, v, a;
  RowInputs(int K, int V) : q(K), k(K), v(V), a(K) {}
  void Read(const GatedLinearScanArgs& g, int r, int h) {
    const int K = g.key_dim, V = g.value_dim;
    for (int i = 0; i < K; ++i) {
      q[i] = g.scale * Map(g.feature_map, g.q[size_t(r) * g.ld_q + size_t(h) * K + i]);
      k[i] = Map(g.feature_map, g.k[size_t(r) * g.ld_k + size_t(h) * K + i]);
    }
    for (int j = 0; j < V; ++j) v[j] = g.v[size_t(r) * g.ld_v + size_t(h) * V + j];
    for (int i = 0; i < K; ++i) {
      double logit = 0;
      switch (g.decay) {
        case LinearDecay::kNone:
          a[i] = 0;
          continue;
        case LinearDecay::kConstant:
          a[i] = g.log_gamma[h];
          continue;
        case LinearDecay::kPerHead:
          logit = g.gate[size_t(r) * g.ld_gate + h];
          break;
        case LinearDecay::kPerKey:
          logit = g.gate[size_t(r) * g.ld_gate + size_t(h) * K + i];
          break;
      }
      a[i] = std::max(LogSigmoid(logit) / g.gate_normalizer, double(g.gate_clamp_min));
    }
  }
};

}  // namespace

void GatedLinearScan(const SeqBatch& batch, const GatedLinearScanArgs& g) {
  const int H = g.heads, K = g.key_dim, V = g.value_dim;
  RowInputs in(K, V);
  for (int s = 0; s < batch.n_seq; ++s) {
    float* S = g.state.slot(batch.slots[s]);  // (H, V, K)
    std::vector<double> st(S, S + size_t(H) * V * K);
    for (int r = batch.row_offsets[s]; r < batch.row_offsets[s + 1]; ++r) {
      for (int h = 0; h < H; ++h) {
        in.Read(g, r, h);
        for (int j = 0; j < V; ++j) {
          double* row = st.data() + (size_t(h) * V + j) * K;
          double y = 0;
          for (int i = 0; i < K; ++i) {
            row[i] = std::exp(in.a[i]) * row[i] + in.v[j] * in.k[i];
            y += row[i] * in.q[i];
          }
          g.out[size_t(r) * g.ld_out + size_t(h) * V + j] = float(y);
        }
      }
    }
    for (size_t i = 0; i < st.size(); ++i) S[i] = float(st[i]);
  }
}

// The chunked form term by term, in double: per chunk and head, the cumulative log decays per
// key, the intra-chunk sum over u <= t, the read-out of the carried state, then the new state.
void GatedLinearChunkedScan(const SeqBatch& batch, const GatedLinearScanArgs& g, int chunk) {
  const int H = g.heads, K = g.key_dim, V = g.value_dim;
  for (int s = 0; s < batch.n_seq; ++s) {
    float* S = g.state.slot(batch.slots[s]);
    std::vector<double> st(S, S + size_t(H) * V * K);
    const int first = batch.row_offsets[s], last = batch.row_offsets[s + 1];
    for (int c0 = first; c0 < last; c0 += chunk) {
      const int n = std::min(chunk, last - c0);
      for (int h = 0; h < H; ++h) {
        std::vector<RowInputs> rows(n, RowInputs(K, V));
        std::vector<double> G(size_t(n) * K);  // G[t * K + k]
        for (int t = 0; t < n; ++t) {
          rows[t].Read(g, c0 + t, h);
          for (int i = 0; i < K; ++i)
            G[size_t(t) * K + i] = (t > 0 ? G[size_t(t - 1) * K + i] : 0.0) + rows[t].a[i];
        }
        double* Sh = st.data() + size_t(h) * V * K;
        for (int t = 0; t < n; ++t) {
          std::vector<double> y(V, 0.0);
          for (int u = 0; u <= t; ++u) {
            double w = 0;
            for (int i = 0; i < K; ++i)
              w += rows[t].q[i] * rows[u].k[i] *
                   std::exp(G[size_t(t) * K + i] - G[size_t(u) * K + i]);
            for (int j = 0; j < V; ++j) y[j] += w * rows[u].v[j];
          }
          for (int j = 0; j < V; ++j) {
            for (int i = 0; i < K; ++i)
              y[j] += Sh[size_t(j) * K + i] * rows[t].q[i] * std::exp(G[size_t(t) * K + i]);
            g.out[size_t(c0 + t) * g.ld_out + size_t(h) * V + j] = float(y[j]);
          }
        }
        const double* end = G.data() + size_t(n - 1) * K;
        for (int j = 0; j < V; ++j) {
          for (int i = 0; i < K; ++i) {
            double v = std::exp(end[i]) * Sh[size_t(j) * K + i];
            for (int u = 0; u < n; ++u)
              v += std::exp(end[i] - G[size_t(u) * K + i]) * rows[u].k[i] * rows[u].v[j];
            Sh[size_t(j) * K + i] = v;
          }
        }
      }
    }
    for (size_t i = 0; i < st.size(); ++i) S[i] = float(st[i]);
  }
}

void SwiGlu(const SwiGluArgs& a, int rows) {
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < a.cols; ++c) {
      const double g = a.gate[size_t(r) * a.ld_gate + c];
      a.out[size_t(r) * a.ld_out + c] =
          float(g / (1.0 + std::exp(-g)) * a.up[size_t(r) * a.ld_up + c]);
    }
  }
}

}  // namespace ssm::reference
