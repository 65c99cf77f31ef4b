// A backend without a kernel a layer type needs refuses the model with a message naming the
// op, the backend and the layer type, instead of aborting in the middle of a step.
#include <gtest/gtest.h>

#include "server/layers/mamba2/mamba2.h"
#include "tests/engine/engine_test_util.h"

namespace ssm {
namespace {

// The cpu backend, but claiming no ops beyond the base set (as a backend without Mamba-2
// kernels does).
class BaseOpsOnly final : public Backend {
 public:
  BaseOpsOnly() : cpu_(CreateBackend("cpu", 1)) {}
  std::string name() const override { return "base-ops"; }
  std::unique_ptr<Buffer> Allocate(size_t n) override { return cpu_->Allocate(n); }
  void CopyToBackend(float* d, const float* s, size_t n) override { cpu_->CopyToBackend(d, s, n); }
  void CopyToHost(float* d, const float* s, size_t n) override { cpu_->CopyToHost(d, s, n); }
  void Fill(float* d, size_t n, float v) override { cpu_->Fill(d, n, v); }
  std::unique_ptr<LinearWeights> PrepareLinear(const float* w, const float* b, int out,
                                               int in) override {
    return cpu_->PrepareLinear(w, b, out, in);
  }
  void Linear(const LinearWeights& w, const float* x, int ld_x, int rows, float* y,
              int ld_y) override {
    cpu_->Linear(w, x, ld_x, rows, y, ld_y);
  }
  void RmsNorm(const float* x, const float* w, int rows, int dim, float eps, float* y) override {
    cpu_->RmsNorm(x, w, rows, dim, eps, y);
  }
  void Add(float* y, const float* x, size_t n) override { cpu_->Add(y, x, n); }
  void CausalConv(const SeqBatch& b, const CausalConvArgs& a) override { cpu_->CausalConv(b, a); }
  void SelectiveScan(const SeqBatch& b, const SelectiveScanArgs& a) override {
    cpu_->SelectiveScan(b, a);
  }
  void ApplyActivation(Activation act, float* y, int rows, int cols) override {
    cpu_->ApplyActivation(act, y, rows, cols);
  }

 private:
  std::unique_ptr<Backend> cpu_;
};

LayerContext Context(const Model& model, int layer, Backend* backend) {
  LayerContext ctx;
  ctx.tensors = &model.tensors();
  ctx.prefix = "backbone.layers." + std::to_string(layer) + ".";
  ctx.d_model = model.config().d_model;
  ctx.backend = backend;
  return ctx;
}

TEST(LayerSupportTest, AMissingKernelIsAClearErrorNotAnAbort) {
  auto model = testing::RandomModel(testing::SmallMamba2Config(), 3);
  BaseOpsOnly backend;
  StatusOr<std::unique_ptr<Layer>> layer =
      model->config().layer_params(0).Create(Context(*model, 0, &backend));
  ASSERT_FALSE(layer.ok());
  EXPECT_EQ(layer.status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(layer.status().message(),
            "the base-ops backend has no ssd_scan kernel, which layer type \"mamba2\" needs; the "
            "cpu backend has every op (--device cpu)");

  // The Mamba-1 layers of the same stack need only the base ops.
  auto hybrid = testing::RandomModel(testing::SmallHybridConfig(), 3);
  EXPECT_TRUE(hybrid->config().layer_params(0).Create(Context(*hybrid, 0, &backend)).ok());
  EXPECT_FALSE(hybrid->config().layer_params(1).Create(Context(*hybrid, 1, &backend)).ok());
}

TEST(LayerSupportTest, ReferenceAndCpuHaveEveryOp) {
  for (const char* name : {"reference", "cpu"}) {
    auto backend = CreateBackend(name, 1);
    for (Op op : {Op::kSsdScan, Op::kSsdChunkedScan, Op::kGatedRmsNorm, Op::kGatedLinearScan,
                  Op::kGatedLinearChunkedScan, Op::kRotary, Op::kSwiGlu})
      EXPECT_TRUE(backend->Supports(op)) << name << " " << OpName(op);
  }
}

}  // namespace
}  // namespace ssm
