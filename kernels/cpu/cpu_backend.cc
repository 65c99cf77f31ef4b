// The cpu backend: fast ops on host memory, threads = cores unless told otherwise.
#include <algorithm>

#include "kernels/base/host_buffer.h"
#include "kernels/base/rotary.h"
#include "kernels/base/worker_pool.h"
#include "kernels/cpu/ops.h"
#include "kernels/reference/ops.h"

namespace ssm::cpu {
namespace {

class CpuBackend final : public HostMemoryBackend {
 public:
  explicit CpuBackend(int threads)
      : max_threads_(WorkerPool::ThreadsOrCores(threads)), threads_(max_threads_) {}
  std::string name() const override { return "cpu"; }
  void SetThreads(int threads) override { threads_ = std::clamp(threads, 1, max_threads_); }

  std::unique_ptr<LinearWeights> PrepareLinear(const float* w, const float* bias, int out,
                                               int in) override {
    return PackLinear(w, bias, out, in);
  }
  void Linear(const LinearWeights& w, const float* x, int ld_x, int rows, float* y,
              int ld_y) override {
    cpu::Linear(w, x, ld_x, rows, y, ld_y, threads_);
  }
  void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y) override {
    cpu::RmsNorm(x, w, rows, dim, eps, y, threads_);
  }
  void Add(float* y, const float* x, size_t n) override {
    for (size_t i = 0; i < n; ++i) y[i] += x[i];
  }
  void CausalConv(const SeqBatch& batch, const CausalConvArgs& args) override {
    cpu::CausalConv(batch, args, threads_);
  }
  void SelectiveScan(const SeqBatch& batch, const SelectiveScanArgs& args) override {
    cpu::SelectiveScan(batch, args, threads_);
  }
  // The head's (rows, d_out) activation is tiny next to the layers: the reference code serves.
  void ApplyActivation(Activation act, float* y, int rows, int cols) override {
    reference::ApplyActivation(act, y, rows, cols);
  }
  bool Supports(Op) const override { return true; }
  void SsdScan(const SeqBatch& batch, const SsdScanArgs& args) override {
    cpu::SsdScan(batch, args, threads_);
  }
  void SsdChunkedScan(const SeqBatch& batch, const SsdScanArgs& args, int chunk) override {
    cpu::SsdChunkedScan(batch, args, chunk, threads_);
  }
  void GatedRmsNorm(const GatedRmsNormArgs& args, int rows) override {
    cpu::GatedRmsNorm(args, rows, threads_);
  }
  void GatedLinearScan(const SeqBatch& batch, const GatedLinearScanArgs& args) override {
    cpu::GatedLinearScan(batch, args, threads_);
  }
  void GatedLinearChunkedScan(const SeqBatch& batch, const GatedLinearScanArgs& args,
                              int chunk) override {
    cpu::GatedLinearChunkedScan(batch, args, chunk, threads_);
  }
  void Rotary(const SeqBatch& batch, const RotaryArgs& args) override {
    HostRotary(batch, args, threads_);
  }
  void SwiGlu(const SwiGluArgs& args, int rows) override { cpu::SwiGlu(args, rows, threads_); }

 private:
  int max_threads_;
  int threads_;  // for the ops of the current step
};

}  // namespace

std::unique_ptr<Backend> CreateCpuBackend(int threads) {
  return std::make_unique<CpuBackend>(threads);
}

}  // namespace ssm::cpu
