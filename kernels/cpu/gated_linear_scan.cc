#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/base/worker_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace ssm::cpu {
namespace {

using simd::kLanes;
using simd::Packet;
namespace ei = simd::ei;

Packet Map(FeatureMap f, Packet x) {
  switch (f) {
    case FeatureMap::kIdentity:
      return x;
    case FeatureMap::kRelu:
      return simd::Max(x, simd::Zero());
    case FeatureMap::kEluPlusOne:
      return ei::pselect(ei::pcmp_lt(simd::Zero(), x), simd::Add(x, simd::Set1(1.0f)),
                         simd::Exp(ei::pmin(x, simd::Zero())));
  }
  return x;
}

// max(logsigmoid(x) / normalizer, clamp_min), logsigmoid(x) = -softplus(-x).
Packet LogDecay(Packet x, const GatedLinearScanArgs& a) {
  const Packet ls = simd::Sub(simd::Zero(), simd::Softplus(simd::Sub(simd::Zero(), x)));
  return simd::Max(simd::Div(ls, simd::Set1(a.gate_normalizer)), simd::Set1(a.gate_clamp_min));
}

// One row of head h: q' (scaled) and k' mapped, and the log decay per key (kPerKey) or in
// a[0] (the other modes), written to the task's buffers.
void ReadRow(const GatedLinearScanArgs& a, int r, int h, float* q, float* k, float* log_decay) {
  const int K = a.key_dim;
  const float* qr = a.q + size_t(r) * a.ld_q + size_t(h) * K;
  const float* kr = a.k + size_t(r) * a.ld_k + size_t(h) * K;
  const Packet scale = simd::Set1(a.scale);
  for (int i = 0; i < K; i += kLanes) {
    const int m = std::min(kLanes, K - i);
    simd::StoreN(q + i, simd::Mul(scale, Map(a.feature_map, simd::LoadN(qr + i, m))), m);
    simd::StoreN(k + i, Map(a.feature_map, simd::LoadN(kr + i, m)), m);
  }
  switch (a.decay) {
    case LinearDecay::kNone:
      log_decay[0] = 0.0f;
      break;
    case LinearDecay::kConstant:
      log_decay[0] = a.log_gamma[h];
      break;
    case LinearDecay::kPerHead: {
      const float g = a.gate[size_t(r) * a.ld_gate + h];
      log_decay[0] = ei::pfirst(LogDecay(simd::Set1(g), a));
      break;
    }
    case LinearDecay::kPerKey: {
      const float* g = a.gate + size_t(r) * a.ld_gate + size_t(h) * K;
      for (int i = 0; i < K; i += kLanes) {
        const int m = std::min(kLanes, K - i);
        simd::StoreN(log_decay + i, LogDecay(simd::LoadN(g + i, m), a), m);
      }
      break;
    }
  }
}

}  // namespace

// Each task scans one head of one sequence: its state S_h (V, K) stays in cache over the rows;
// per row the mapped q and k and the decays are formed once, then every state row is updated
// and read out with packets along K.
void GatedLinearScan(const SeqBatch& batch, const GatedLinearScanArgs& a, int threads) {
  const int H = a.heads, K = a.key_dim, V = a.value_dim;
  const bool per_key = a.decay == LinearDecay::kPerKey;
  const int tasks = batch.n_seq * H;
  ParallelFor(tasks > 1 ? threads : 1, tasks, [&](int64_t begin, int64_t end) {
    std::vector<float> q(K), k(K), log_decay(K), decay(K);
    for (int task = int(begin); task < end; ++task) {
      const int s = task / H, h = task % H;
      float* S = a.state.slot(batch.slots[s]) + size_t(h) * V * K;
      for (int r = batch.row_offsets[s]; r < batch.row_offsets[s + 1]; ++r) {
        ReadRow(a, r, h, q.data(), k.data(), log_decay.data());
        if (per_key) {
          for (int i = 0; i < K; i += kLanes) {
            const int m = std::min(kLanes, K - i);
            simd::StoreN(decay.data() + i, simd::Exp(simd::LoadN(log_decay.data() + i, m)), m);
          }
        } else {
          std::fill(decay.begin(), decay.end(), std::exp(log_decay[0]));
        }
        const float* v = a.v + size_t(r) * a.ld_v + size_t(h) * V;
        float* out = a.out + size_t(r) * a.ld_out + size_t(h) * V;
        const bool decays = a.decay != LinearDecay::kNone;
        for (int j = 0; j < V; ++j) {
          float* row = S + size_t(j) * K;
          const Packet vj = simd::Set1(v[j]);
          Packet y = simd::Zero();
          for (int i = 0; i < K; i += kLanes) {
            const int m = std::min(kLanes, K - i);
            const Packet kv = simd::Mul(vj, simd::LoadN(k.data() + i, m));
            const Packet old = simd::LoadN(row + i, m);
            const Packet st =
                decays ? simd::Fma(simd::LoadN(decay.data() + i, m), old, kv) : simd::Add(old, kv);
            simd::StoreN(row + i, st, m);
            y = simd::Fma(st, simd::LoadN(q.data() + i, m), y);
          }
          out[j] = simd::ReduceSum(y);
        }
      }
    }
  });
}

// The chunked form, one task per (sequence, head). Per chunk: the rows' mapped q, k and log
// decays; the cumulative log decays G per key in double (their differences feed exp);
// qd_t = q'_t exp(G_t) for the carried state's read-out and kd_u = k'_u exp(G_end - G_u) for
// its update; the lower-triangular weights W[t, u] = sum_k q'_tk k'_uk exp(G_tk - G_uk); each
// output row from W and the carried state; then the new state. Scalar decays (every mode but
// kPerKey) take one exp per (t, u) instead of one per key.
void GatedLinearChunkedScan(const SeqBatch& batch, const GatedLinearScanArgs& a, int chunk,
                            int threads) {
  const int H = a.heads, K = a.key_dim, V = a.value_dim;
  const bool per_key = a.decay == LinearDecay::kPerKey;
  const int G_width = per_key ? K : 1;
  const int tasks = batch.n_seq * H;
  TaskQueue queue(tasks);
  ParallelRun(tasks > 1 ? std::min(threads, tasks) : 1, [&](int, int) {
    std::vector<float> q, k, log_decay, qd, kd, W, diff(K), y(V);
    std::vector<double> G;
    for (int64_t next; queue.Next(&next);) {
      const int task = int(next);
      const int s = task / H, h = task % H;
      float* S = a.state.slot(batch.slots[s]) + size_t(h) * V * K;
      const int first = batch.row_offsets[s], last = batch.row_offsets[s + 1];
      for (int c0 = first; c0 < last; c0 += chunk) {
        const int n = std::min(chunk, last - c0);
        q.resize(size_t(n) * K), k.resize(size_t(n) * K), log_decay.resize(size_t(n) * K);
        qd.resize(size_t(n) * K), kd.resize(size_t(n) * K), G.resize(size_t(n) * G_width);
        W.assign(size_t(n) * n, 0.0f);
        for (int t = 0; t < n; ++t) {
          float* ld = log_decay.data() + size_t(t) * K;
          ReadRow(a, c0 + t, h, q.data() + size_t(t) * K, k.data() + size_t(t) * K, ld);
          for (int i = 0; i < G_width; ++i)
            G[size_t(t) * G_width + i] = (t > 0 ? G[size_t(t - 1) * G_width + i] : 0.0) + ld[i];
        }
        auto Gk = [&](int t, int i) { return G[size_t(t) * G_width + (per_key ? i : 0)]; };
        const int end = n - 1;
        for (int t = 0; t < n; ++t) {
          for (int i = 0; i < K; ++i) {
            qd[size_t(t) * K + i] = q[size_t(t) * K + i] * float(std::exp(Gk(t, i)));
            kd[size_t(t) * K + i] = k[size_t(t) * K + i] * float(std::exp(Gk(end, i) - Gk(t, i)));
          }
        }
        for (int t = 0; t < n; ++t) {
          const float* qt = q.data() + size_t(t) * K;
          float* w = W.data() + size_t(t) * n;
          for (int u = 0; u <= t; ++u) {
            const float* ku = k.data() + size_t(u) * K;
            Packet acc = simd::Zero();
            if (per_key) {
              for (int i = 0; i < K; ++i) diff[i] = float(Gk(t, i) - Gk(u, i));
              for (int i = 0; i < K; i += kLanes) {
                const int m = std::min(kLanes, K - i);
                const Packet e = simd::ExpNonPositive(simd::LoadN(diff.data() + i, m));
                acc = simd::Fma(simd::Mul(simd::LoadN(qt + i, m), e), simd::LoadN(ku + i, m), acc);
              }
              w[u] = simd::ReduceSum(acc);
            } else {
              for (int i = 0; i < K; i += kLanes) {
                const int m = std::min(kLanes, K - i);
                acc = simd::Fma(simd::LoadN(qt + i, m), simd::LoadN(ku + i, m), acc);
              }
              w[u] = simd::ReduceSum(acc) * float(std::exp(Gk(t, 0) - Gk(u, 0)));
            }
          }
        }
        auto Vrow = [&](int t) { return a.v + size_t(c0 + t) * a.ld_v + size_t(h) * V; };
        for (int t = 0; t < n; ++t) {
          const float* qdt = qd.data() + size_t(t) * K;
          for (int j = 0; j < V; ++j) {
            const float* row = S + size_t(j) * K;
            Packet acc = simd::Zero();
            for (int i = 0; i < K; i += kLanes) {
              const int m = std::min(kLanes, K - i);
              acc = simd::Fma(simd::LoadN(row + i, m), simd::LoadN(qdt + i, m), acc);
            }
            y[j] = simd::ReduceSum(acc);
          }
          const float* w = W.data() + size_t(t) * n;
          float* out = a.out + size_t(c0 + t) * a.ld_out + size_t(h) * V;
          for (int j = 0; j < V; j += kLanes) {
            const int m = std::min(kLanes, V - j);
            Packet acc = simd::LoadN(y.data() + j, m);
            for (int u = 0; u <= t; ++u)
              acc = simd::Fma(simd::Set1(w[u]), simd::LoadN(Vrow(u) + j, m), acc);
            simd::StoreN(out + j, acc, m);
          }
        }
        for (int i = 0; i < K; ++i) diff[i] = float(std::exp(Gk(end, i)));
        for (int j = 0; j < V; ++j) {
          float* row = S + size_t(j) * K;
          for (int i = 0; i < K; i += kLanes) {
            const int m = std::min(kLanes, K - i);
            Packet st = simd::Mul(simd::LoadN(diff.data() + i, m), simd::LoadN(row + i, m));
            for (int u = 0; u < n; ++u)
              st = simd::Fma(simd::Set1(Vrow(u)[j]), simd::LoadN(kd.data() + size_t(u) * K + i, m),
                             st);
            simd::StoreN(row + i, st, m);
          }
        }
      }
    }
  });
}

void SwiGlu(const SwiGluArgs& a, int rows, int threads) {
  ParallelFor(rows >= 64 ? threads : 1, rows, [&](int64_t begin, int64_t end) {
    for (int r = int(begin); r < end; ++r) {
      const float* g = a.gate + size_t(r) * a.ld_gate;
      const float* u = a.up + size_t(r) * a.ld_up;
      float* out = a.out + size_t(r) * a.ld_out;
      for (int c = 0; c < a.cols; c += kLanes) {
        const int m = std::min(kLanes, a.cols - c);
        simd::StoreN(out + c, simd::Mul(simd::Silu(simd::LoadN(g + c, m)), simd::LoadN(u + c, m)),
                     m);
      }
    }
  });
}

}  // namespace ssm::cpu
