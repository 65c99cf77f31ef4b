// The reference backend: obvious scalar code with double accumulation, the truth in tests.
#include <vector>

#include "kernels/base/host_buffer.h"
#include "kernels/base/rotary.h"
#include "kernels/reference/ops.h"

namespace ssm::reference {
namespace {

class ReferenceLinear final : public LinearWeights {
 public:
  ReferenceLinear(const float* w, const float* b, int out, int in)
      : w_(w, w + size_t(out) * in),
        b_(b ? std::vector<float>(b, b + out) : std::vector<float>()),
        out_(out),
        in_(in) {}
  int out_features() const override { return out_; }
  int in_features() const override { return in_; }
  const float* w() const { return w_.data(); }
  const float* b() const { return b_.empty() ? nullptr : b_.data(); }

 private:
  std::vector<float> w_, b_;
  int out_, in_;
};

class ReferenceBackend final : public HostMemoryBackend {
 public:
  std::string name() const override { return "reference"; }

  std::unique_ptr<LinearWeights> PrepareLinear(const float* w, const float* bias, int out,
                                               int in) override {
    return std::make_unique<ReferenceLinear>(w, bias, out, in);
  }
  void Linear(const LinearWeights& weights, const float* x, int ld_x, int rows, float* y,
              int ld_y) override {
    const auto& lw = static_cast<const ReferenceLinear&>(weights);
    reference::Linear(lw.w(), lw.b(), lw.out_features(), lw.in_features(), x, ld_x, rows, y, ld_y);
  }
  void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y) override {
    reference::RmsNorm(x, w, rows, dim, eps, y);
  }
  void Add(float* y, const float* x, size_t n) override {
    for (size_t i = 0; i < n; ++i) y[i] += x[i];
  }
  void CausalConv(const SeqBatch& batch, const CausalConvArgs& args) override {
    reference::CausalConv(batch, args);
  }
  void SelectiveScan(const SeqBatch& batch, const SelectiveScanArgs& args) override {
    reference::SelectiveScan(batch, args);
  }
  void ApplyActivation(Activation act, float* y, int rows, int cols) override {
    reference::ApplyActivation(act, y, rows, cols);
  }
  bool Supports(Op) const override { return true; }
  void SsdScan(const SeqBatch& batch, const SsdScanArgs& args) override {
    reference::SsdScan(batch, args);
  }
  void SsdChunkedScan(const SeqBatch& batch, const SsdScanArgs& args, int chunk) override {
    reference::SsdChunkedScan(batch, args, chunk);
  }
  void GatedRmsNorm(const GatedRmsNormArgs& args, int rows) override {
    reference::GatedRmsNorm(args, rows);
  }
  void GatedLinearScan(const SeqBatch& batch, const GatedLinearScanArgs& args) override {
    reference::GatedLinearScan(batch, args);
  }
  void GatedLinearChunkedScan(const SeqBatch& batch, const GatedLinearScanArgs& args,
                              int chunk) override {
    reference::GatedLinearChunkedScan(batch, args, chunk);
  }
  void Rotary(const SeqBatch& batch, const RotaryArgs& args) override {
    HostRotary(batch, args, 1);
  }
  void SwiGlu(const SwiGluArgs& args, int rows) override { reference::SwiGlu(args, rows); }
};

}  // namespace

std::unique_ptr<Backend> CreateReferenceBackend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace ssm::reference
