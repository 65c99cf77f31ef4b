// Mamba-1 (docs/design.md §3.1): its config section, tensors, state, and the mixer as a
// sequence of backend ops.
#include "server/layers/mamba/mamba.h"

#include <fmt/format.h>

#include <cmath>

#include "common/strings.h"
#include "server/layers/block.h"

namespace ssm {
namespace {

constexpr int kMaxExpand = 64;
constexpr int kMaxDState = 256;      // the cuda scan keeps a channel's state in registers
constexpr int kMaxDConv = 8;         // the cuda conv unrolls the kernel
constexpr double kALogNoise = 0.05;  // std of the noise on A_log = log(1..N)
constexpr double kDNoise = 0.05;     // std of the noise on D = 1

class MambaMixer final : public Mixer {
 public:
  MambaMixer(const MambaParams& p, const LayerContext& ctx) : backend_(ctx.backend) {
    d_model_ = ctx.d_model;
    E_ = p.expand * ctx.d_model;
    N_ = p.d_state;
    K_ = p.d_conv;
    R_ = p.dt_rank;
    auto t = [&](const std::string& name) -> const std::vector<float>& {
      return ctx.tensor("mixer." + name).data;
    };
    Backend* b = ctx.backend;
    in_proj_ = b->PrepareLinear(t("in_proj.weight").data(), ctx.optional("mixer.in_proj.bias"),
                                2 * E_, d_model_);
    x_proj_ = b->PrepareLinear(t("x_proj.weight").data(), nullptr, R_ + 2 * N_, E_);
    dt_proj_ = b->PrepareLinear(t("dt_proj.weight").data(), t("dt_proj.bias").data(), E_, R_);
    out_proj_ = b->PrepareLinear(t("out_proj.weight").data(), ctx.optional("mixer.out_proj.bias"),
                                 d_model_, E_);
    conv_ = UploadConv(ctx, E_, K_);
    A_ = ctx.Upload(ChannelsLast(NegExp(t("A_log")), E_, N_));
    D_ = ctx.Upload(t("D"));
  }

  size_t state_floats() const override { return size_t(K_ - 1) * E_ + size_t(N_) * E_; }
  size_t scratch_floats_per_row() const override { return 5 * size_t(E_) + R_ + 2 * N_; }

  void Forward(const SeqBatch& batch, const float* x, float* out, StateView state,
               float* scratch) override {
    const int rows = batch.rows(), w_xdbl = R_ + 2 * N_;
    float* xz = scratch;                       // (rows, 2E): [x | z]
    float* s = xz + size_t(rows) * 2 * E_;     // (rows, E): silu(conv(x))
    float* xdbl = s + size_t(rows) * E_;       // (rows, R + 2N): [dt_r | B | C]
    float* dt = xdbl + size_t(rows) * w_xdbl;  // (rows, E)
    float* y = dt + size_t(rows) * E_;         // (rows, E)
    backend_->Linear(*in_proj_, x, d_model_, rows, xz, 2 * E_);

    CausalConvArgs conv;
    conv.channels = E_;
    conv.kernel = K_;
    conv.x = xz;
    conv.ld_x = 2 * E_;
    conv.w = conv_.w->data();
    conv.bias = conv_.bias->data();
    conv.tail = state;  // tail first in the slot
    conv.out = s;
    conv.ld_out = E_;
    backend_->CausalConv(batch, conv);

    backend_->Linear(*x_proj_, s, E_, rows, xdbl, w_xdbl);
    backend_->Linear(*dt_proj_, xdbl, w_xdbl, rows, dt, E_);

    SelectiveScanArgs scan;
    scan.channels = E_;
    scan.d_state = N_;
    scan.u = s;
    scan.ld_u = E_;
    scan.dt = dt;
    scan.ld_dt = E_;
    scan.B = xdbl + R_;
    scan.C = xdbl + R_ + N_;
    scan.ld_bc = w_xdbl;
    scan.z = xz + E_;
    scan.ld_z = 2 * E_;
    scan.A = A_->data();
    scan.D = D_->data();
    scan.state = {state.base + size_t(K_ - 1) * E_, state.slot_stride};  // H after the tail
    scan.out = y;
    scan.ld_out = E_;
    backend_->SelectiveScan(batch, scan);

    backend_->Linear(*out_proj_, y, E_, rows, out, d_model_);
  }

 private:
  Backend* backend_;
  int d_model_, E_, N_, K_, R_;
  std::unique_ptr<LinearWeights> in_proj_, x_proj_, dt_proj_, out_proj_;
  ConvWeights conv_;               // (K, E), (E)
  std::unique_ptr<Buffer> A_, D_;  // (N, E), (E)
};

}  // namespace

Status MambaParams::Parse(ConfigReader* r, int d_model) {
  SSM_RETURN_IF_ERROR(r->Get("d_state", &d_state));
  SSM_RETURN_IF_ERROR(r->Get("d_conv", &d_conv));
  SSM_RETURN_IF_ERROR(r->Get("expand", &expand));
  SSM_RETURN_IF_ERROR(r->Get("dt_rank", &dt_rank));
  SSM_RETURN_IF_ERROR(r->Get("conv_bias", &conv_bias));
  SSM_RETURN_IF_ERROR(r->Get("bias", &bias));
  if (!r->Has("dt_rank")) dt_rank = AutoDtRank(d_model);  // d_model is validated later
  return OkStatus();
}

Status MambaParams::Validate(const std::string& path, int) const {
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "d_state", d_state, 1, kMaxDState));
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "d_conv", d_conv, 1, kMaxDConv));
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "expand", expand, 1, kMaxExpand));
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "dt_rank", dt_rank, 1, kMaxConfigDim));
  return OkStatus();
}

ConfigJson MambaParams::ToJson() const {
  return {{"type", type()},     {"d_state", d_state},     {"d_conv", d_conv}, {"expand", expand},
          {"dt_rank", dt_rank}, {"conv_bias", conv_bias}, {"bias", bias}};
}

std::string MambaParams::ToString() const {
  return fmt::format("mamba(d_state={} d_conv={} expand={} dt_rank={}{}{})", d_state, d_conv,
                     expand, dt_rank, conv_bias ? " conv_bias" : "", bias ? " bias" : "");
}

std::vector<TensorSpec> MambaParams::Tensors(const std::string& prefix, int d_model) const {
  const int64_t d = d_model, e = int64_t(expand) * d_model, n = d_state, r = dt_rank;
  const std::string m = prefix + "mixer.";
  std::vector<TensorSpec> specs;
  specs.push_back({prefix + "norm.weight", {d}});
  specs.push_back({m + "in_proj.weight", {2 * e, d}});
  if (bias) specs.push_back({m + "in_proj.bias", {2 * e}});
  specs.push_back({m + "conv1d.weight", {e, 1, d_conv}});
  if (conv_bias) specs.push_back({m + "conv1d.bias", {e}});
  specs.push_back({m + "x_proj.weight", {r + 2 * n, e}});
  specs.push_back({m + "dt_proj.weight", {e, r}});
  specs.push_back({m + "dt_proj.bias", {e}});
  specs.push_back({m + "A_log", {e, n}});
  specs.push_back({m + "D", {e}});
  specs.push_back({m + "out_proj.weight", {d, e}});
  if (bias) specs.push_back({m + "out_proj.bias", {d}});
  return specs;
}

// The conv tail (d_conv - 1, E) and H (d_state, E).
size_t MambaParams::state_floats(int d_model) const {
  const size_t e = size_t(expand) * d_model;
  return size_t(d_conv - 1) * e + size_t(d_state) * e;
}

// Counted per frame (one multiply-add = 2 FLOPs): in_proj, x_proj, dt_proj and out_proj,
// 2 * in * out each; the causal conv, 2 * E * d_conv; the scan, 7 * E * N (delta*A, exp,
// decay*H, delta*u*B, add, *C and the sum over N). The norm, softplus and the gate are O(E)
// and left out.
double MambaParams::flops_per_frame(int d_model) const {
  const double d = d_model, e = double(expand) * d_model, n = d_state, r = dt_rank;
  auto linear = [](double in, double out) { return 2.0 * in * out; };
  return linear(d, 2 * e) + linear(e, r + 2 * n) + linear(r, e) + linear(e, d) + 2.0 * e * d_conv +
         7.0 * e * n;
}

void MambaParams::InitTensor(const TensorSpec& spec, Rng* rng, std::vector<float>* out) const {
  const size_t cols = out->size() / spec.shape[0];
  if (EndsWith(spec.name, "mixer.A_log")) {  // (E, N): A = -exp(A_log) ~ -(1..N) per row
    FillWith(out, [&](size_t i) { return std::log(i % cols + 1.0) + kALogNoise * rng->Normal(); });
  } else if (EndsWith(spec.name, "mixer.D")) {
    FillWith(out, [&](size_t) { return 1.0 + kDNoise * rng->Normal(); });
  } else if (EndsWith(spec.name, "dt_proj.bias")) {  // softplus(bias) = dt at initialisation
    FillWith(out, [&](size_t) { return SampleDtBias(rng); });
  } else {
    InitDefault(spec, rng, out);
  }
}

StatusOr<std::unique_ptr<Layer>> MambaParams::Create(const LayerContext& ctx) const {
  return MakePreNormBlock(ctx, std::make_unique<MambaMixer>(*this, ctx));
}

}  // namespace ssm
