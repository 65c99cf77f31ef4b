#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/base/worker_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace ssm::cpu {

// Each task scans one head of one sequence: its state S_h (P, N) stays in cache over the rows,
// each state row updated and read out with packets along N, where B and C run contiguously.
void SsdScan(const SeqBatch& batch, const SsdScanArgs& a, int threads) {
  using simd::kLanes;
  using simd::Packet;
  const int H = a.heads, P = a.head_dim, N = a.d_state, heads_per_group = a.heads / a.groups;
  const int tasks = batch.n_seq * H;
  ParallelFor(tasks > 1 ? threads : 1, tasks, [&](int64_t begin, int64_t end) {
    for (int task = int(begin); task < end; ++task) {
      const int s = task / H, h = task % H, g = h / heads_per_group;
      float* S = a.state.slot(batch.slots[s]) + size_t(h) * P * N;
      const float A = a.A[h], D = a.D[h], dt_bias = a.dt_bias[h];
      for (int r = batch.row_offsets[s]; r < batch.row_offsets[s + 1]; ++r) {
        const float dt = a.dt[size_t(r) * a.ld_dt + h] + dt_bias;
        const float delta = dt > 20.0f ? dt : std::log1p(std::exp(dt));
        const Packet decay = simd::Set1(std::exp(delta * A));
        const float* B = a.B + size_t(r) * a.ld_bc + size_t(g) * N;
        const float* C = a.C + size_t(r) * a.ld_bc + size_t(g) * N;
        const float* x = a.x + size_t(r) * a.ld_x + size_t(h) * P;
        float* out = a.out + size_t(r) * a.ld_out + size_t(h) * P;
        for (int p = 0; p < P; ++p) {
          float* row = S + size_t(p) * N;
          const Packet dx = simd::Set1(delta * x[p]);
          Packet y = simd::Zero();
          for (int n = 0; n < N; n += kLanes) {
            const int m = std::min(kLanes, N - n);
            const Packet st =
                simd::Fma(decay, simd::LoadN(row + n, m), simd::Mul(dx, simd::LoadN(B + n, m)));
            simd::StoreN(row + n, st, m);
            y = simd::Fma(st, simd::LoadN(C + n, m), y);
          }
          out[p] = simd::ReduceSum(y) + D * x[p];
        }
      }
    }
  });
}

void GatedRmsNorm(const GatedRmsNormArgs& a, int rows, int threads) {
  using simd::kLanes;
  using simd::Packet;
  const int C = a.channels, G = a.group_size;
  ParallelFor(rows >= 64 ? threads : 1, rows, [&](int64_t begin, int64_t end) {
    for (int r = int(begin); r < end; ++r) {
      const float* x = a.x + size_t(r) * a.ld_x;
      const float* z = a.z ? a.z + size_t(r) * a.ld_z : nullptr;
      float* out = a.out + size_t(r) * a.ld_out;
      for (int c0 = 0; c0 < C; c0 += G) {
        // The gated value (or x alone) is formed twice, for the sum and for the output, so out
        // may alias x.
        auto value = [&](int i, int m) {
          const Packet v = simd::LoadN(x + c0 + i, m);
          return (!z || a.norm_before_gate) ? v
                                            : simd::Mul(v, simd::Silu(simd::LoadN(z + c0 + i, m)));
        };
        Packet ss = simd::Zero();
        for (int i = 0; i < G; i += kLanes) {
          const Packet v = value(i, std::min(kLanes, G - i));
          ss = simd::Fma(v, v, ss);
        }
        const Packet scale = simd::Set1(1.0f / std::sqrt(simd::ReduceSum(ss) / float(G) + a.eps));
        for (int i = 0; i < G; i += kLanes) {
          const int m = std::min(kLanes, G - i);
          Packet y = simd::Mul(simd::Mul(value(i, m), scale), simd::LoadN(a.w + c0 + i, m));
          if (z && a.norm_before_gate) y = simd::Mul(y, simd::Silu(simd::LoadN(z + c0 + i, m)));
          simd::StoreN(out + c0 + i, y, m);
        }
      }
    }
  });
}

}  // namespace ssm::cpu

namespace ssm::cpu {

// The chunked form, one task per (sequence, head) as in SsdScan. Per chunk: the cumulative
// decays in double (their differences feed exp, and float sums of up to `chunk` terms would
// lose digits there); the lower-triangular weights W[t, u] = exp(cum_t - cum_u) delta_u C_t.B_u
// with packets along N and then along u; each output row from W and the carried state with
// packets along P; the new state with packets along N.
void SsdChunkedScan(const SeqBatch& batch, const SsdScanArgs& a, int chunk, int threads) {
  using simd::kLanes;
  using simd::Packet;
  const int H = a.heads, P = a.head_dim, N = a.d_state, heads_per_group = a.heads / a.groups;
  const int tasks = batch.n_seq * H;
  TaskQueue queue(tasks);
  ParallelRun(tasks > 1 ? std::min(threads, tasks) : 1, [&](int, int) {
    std::vector<float> W, delta, diff, coef, y(P);
    std::vector<double> cum;
    for (int64_t next; queue.Next(&next);) {
      const int task = int(next);
      const int s = task / H, h = task % H, g = h / heads_per_group;
      float* S = a.state.slot(batch.slots[s]) + size_t(h) * P * N;
      const float A = a.A[h], D = a.D[h], dt_bias = a.dt_bias[h];
      const int first = batch.row_offsets[s], last = batch.row_offsets[s + 1];
      for (int c0 = first; c0 < last; c0 += chunk) {
        const int n = std::min(chunk, last - c0);
        W.assign(size_t(n) * n, 0.0f);
        delta.resize(n), diff.resize(n), coef.resize(n), cum.resize(n);
        auto Brow = [&](int t) { return a.B + size_t(c0 + t) * a.ld_bc + size_t(g) * N; };
        auto Crow = [&](int t) { return a.C + size_t(c0 + t) * a.ld_bc + size_t(g) * N; };
        auto Xrow = [&](int t) { return a.x + size_t(c0 + t) * a.ld_x + size_t(h) * P; };
        for (int t = 0; t < n; ++t) {
          const float dt = a.dt[size_t(c0 + t) * a.ld_dt + h] + dt_bias;
          delta[t] = dt > 20.0f ? dt : std::log1p(std::exp(dt));
          cum[t] = (t > 0 ? cum[t - 1] : 0.0) + double(delta[t]) * A;
        }
        for (int t = 0; t < n; ++t) {
          const float* C = Crow(t);
          float* w = W.data() + size_t(t) * n;
          for (int u = 0; u <= t; ++u) {
            const float* B = Brow(u);
            Packet acc = simd::Zero();
            for (int k = 0; k < N; k += kLanes) {
              const int m = std::min(kLanes, N - k);
              acc = simd::Fma(simd::LoadN(C + k, m), simd::LoadN(B + k, m), acc);
            }
            w[u] = simd::ReduceSum(acc) * delta[u];
            diff[u] = float(cum[t] - cum[u]);
          }
          for (int u = 0; u <= t; u += kLanes) {
            const int m = std::min(kLanes, t + 1 - u);
            simd::StoreN(w + u,
                         simd::Mul(simd::ExpNonPositive(simd::LoadN(diff.data() + u, m)),
                                   simd::LoadN(w + u, m)),
                         m);
          }
        }
        for (int t = 0; t < n; ++t) {
          const float* C = Crow(t);
          const float carried_decay = float(std::exp(cum[t]));
          for (int p = 0; p < P; ++p) {
            const float* row = S + size_t(p) * N;
            Packet acc = simd::Zero();
            for (int k = 0; k < N; k += kLanes) {
              const int m = std::min(kLanes, N - k);
              acc = simd::Fma(simd::LoadN(row + k, m), simd::LoadN(C + k, m), acc);
            }
            y[p] = carried_decay * simd::ReduceSum(acc);
          }
          const float* w = W.data() + size_t(t) * n;
          for (int p = 0; p < P; p += kLanes) {
            const int m = std::min(kLanes, P - p);
            Packet acc = simd::LoadN(y.data() + p, m);
            for (int u = 0; u <= t; ++u)
              acc = simd::Fma(simd::Set1(w[u]), simd::LoadN(Xrow(u) + p, m), acc);
            const Packet x = simd::LoadN(Xrow(t) + p, m);
            simd::StoreN(a.out + size_t(c0 + t) * a.ld_out + size_t(h) * P + p,
                         simd::Fma(simd::Set1(D), x, acc), m);
          }
        }
        const double end = cum[n - 1];
        const Packet state_decay = simd::Set1(float(std::exp(end)));
        for (int u = 0; u < n; ++u) coef[u] = float(std::exp(end - cum[u])) * delta[u];
        for (int p = 0; p < P; ++p) {
          float* row = S + size_t(p) * N;
          for (int k = 0; k < N; k += kLanes) {
            const int m = std::min(kLanes, N - k);
            Packet v = simd::Mul(state_decay, simd::LoadN(row + k, m));
            for (int u = 0; u < n; ++u)
              v = simd::Fma(simd::Set1(coef[u] * Xrow(u)[p]), simd::LoadN(Brow(u) + k, m), v);
            simd::StoreN(row + k, v, m);
          }
        }
      }
    }
  });
}

}  // namespace ssm::cpu
