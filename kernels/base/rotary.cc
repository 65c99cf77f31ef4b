#include "kernels/base/rotary.h"

#include <cmath>
#include <vector>

#include "kernels/base/worker_pool.h"

namespace ssm {

constexpr double kLowRange = 16777216.0;  // 2^24: every integer below it is exact in a float

double ReadRotaryPosition(const float* state) { return double(state[0]) * kLowRange + state[1]; }

void WriteRotaryPosition(double position, float* state) {
  const double hi = std::floor(position / kLowRange);
  state[0] = float(hi);
  state[1] = float(position - hi * kLowRange);
}

void HostRotary(const SeqBatch& batch, const RotaryArgs& a, int threads) {
  const int H = a.heads, D = a.head_dim, half = D / 2;
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(double(a.base), -2.0 * i / D);
  ParallelFor(batch.n_seq > 1 ? threads : 1, batch.n_seq, [&](int64_t begin, int64_t end) {
    for (int s = int(begin); s < end; ++s) {
      float* pos = a.position.slot(batch.slots[s]);
      const double start = ReadRotaryPosition(pos);
      const int first = batch.row_offsets[s], last = batch.row_offsets[s + 1];
      for (int r = first; r < last; ++r) {
        const double p = start + (r - first);
        for (int i = 0; i < half; ++i) {
          const double theta = p * inv_freq[i];
          const double c = std::cos(theta), sn = std::sin(theta);
          for (float* base : {a.q + size_t(r) * a.ld_q, a.k + size_t(r) * a.ld_k}) {
            for (int h = 0; h < H; ++h) {
              float* x = base + size_t(h) * D;
              const double x0 = x[i], x1 = x[i + half];
              x[i] = float(x0 * c - x1 * sn);
              x[i + half] = float(x1 * c + x0 * sn);
            }
          }
        }
      }
      WriteRotaryPosition(start + (last - first), pos);
    }
  });
}

}  // namespace ssm
