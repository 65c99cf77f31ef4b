// Batch-invariant GEMM: y = x . W^T + b.
//
// Every output element is one accumulator updated by FMAs in ascending k, then the bias is
// added, whatever the row count, tile shape or thread split. So a row's result is bitwise the
// same alone or inside any batch, which the exactness contract relies on (a generic BLAS picks
// kernels and k-blocking by matrix size, so its results shift with the batch).
#include <algorithm>
#include <cstring>

#include "kernels/base/host_buffer.h"
#include "kernels/base/worker_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/simd.h"

namespace ssm::cpu {

using simd::kLanes;
using simd::Packet;
constexpr int kPanelWidth = 2 * kLanes;  // outputs per panel (two packets)
constexpr int kRowTile = 8;              // rows per micro-kernel call: 16 accumulators
constexpr int kRowsPerTask = 64;         // rows per thread task

class PackedLinear final : public LinearWeights {
 public:
  PackedLinear(const float* w, const float* bias, int out, int in)
      : out_(out),
        in_(in),
        panels_((out + kPanelWidth - 1) / kPanelWidth),
        packed_(size_t(panels_) * in * kPanelWidth),
        bias_(size_t(panels_) * kPanelWidth) {
    // packed_[p][k][c] = w[p * kPanelWidth + c][k]; missing outputs stay zero.
    for (int o = 0; o < out; ++o) {
      const int p = o / kPanelWidth, c = o % kPanelWidth;
      for (int k = 0; k < in; ++k)
        packed_.data()[(size_t(p) * in + k) * kPanelWidth + c] = w[size_t(o) * in + k];
      if (bias) bias_.data()[o] = bias[o];
    }
  }
  int out_features() const override { return out_; }
  int in_features() const override { return in_; }
  int panels() const { return panels_; }
  const float* panel(int p) const { return packed_.data() + size_t(p) * in_ * kPanelWidth; }
  const float* bias(int p) const { return bias_.data() + size_t(p) * kPanelWidth; }

 private:
  int out_, in_, panels_;
  HostBuffer packed_;
  HostBuffer bias_;
};

std::unique_ptr<LinearWeights> PackLinear(const float* w, const float* bias, int out, int in) {
  return std::make_unique<PackedLinear>(w, bias, out, in);
}

namespace {

// y[r, 0:ncols] for MR rows and one panel.
template <int MR>
void MicroKernel(const float* x, int ld_x, const float* panel, int K, const float* bias, float* y,
                 int ld_y, int ncols) {
  Packet acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = simd::Zero();
  for (int k = 0; k < K; ++k) {
    const Packet w0 = simd::Load(panel + k * kPanelWidth);
    const Packet w1 = simd::Load(panel + k * kPanelWidth + kLanes);
    for (int r = 0; r < MR; ++r) {
      const Packet a = simd::Set1(x[r * ld_x + k]);
      acc[r][0] = simd::Fma(a, w0, acc[r][0]);
      acc[r][1] = simd::Fma(a, w1, acc[r][1]);
    }
  }
  const Packet b0 = simd::Load(bias), b1 = simd::Load(bias + kLanes);
  const int n0 = std::min(ncols, kLanes), n1 = ncols - n0;
  for (int r = 0; r < MR; ++r) {
    simd::StoreN(y + r * ld_y, simd::Add(acc[r][0], b0), n0);
    if (n1 > 0) simd::StoreN(y + r * ld_y + kLanes, simd::Add(acc[r][1], b1), n1);
  }
}

using MicroKernelFn = void (*)(const float*, int, const float*, int, const float*, float*, int,
                               int);
constexpr MicroKernelFn kKernels[kRowTile + 1] = {nullptr,        MicroKernel<1>, MicroKernel<2>,
                                                  MicroKernel<3>, MicroKernel<4>, MicroKernel<5>,
                                                  MicroKernel<6>, MicroKernel<7>, MicroKernel<8>};

}  // namespace

void Linear(const LinearWeights& weights, const float* x, int ld_x, int rows, float* y, int ld_y,
            int threads) {
  const auto& w = static_cast<const PackedLinear&>(weights);
  const int K = w.in_features(), out = w.out_features();
  const int row_tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  const int tasks = row_tasks * w.panels();
  const bool parallel = threads > 1 && double(rows) * out * K > 2e5;  // skip fork for tiny ops
  ParallelFor(parallel ? threads : 1, tasks, [&](int64_t begin, int64_t end) {
    for (int task = int(begin); task < end; ++task) {
      const int p = task / row_tasks, rt = task % row_tasks;
      const int ncols = std::min(kPanelWidth, out - p * kPanelWidth);
      const int r_end = std::min(rows, (rt + 1) * kRowsPerTask);
      for (int r = rt * kRowsPerTask; r < r_end; r += kRowTile) {
        const int mr = std::min(kRowTile, r_end - r);
        kKernels[mr](x + size_t(r) * ld_x, ld_x, w.panel(p), K, w.bias(p),
                     y + size_t(r) * ld_y + p * kPanelWidth, ld_y, ncols);
      }
    }
  });
}

}  // namespace ssm::cpu
