// Mamba-2 (docs/design.md §3.2): its config section, tensors, state, and the mixer as a
// sequence of backend ops.
#include "server/layers/mamba2/mamba2.h"

#include <fmt/format.h>

#include <cmath>

#include "common/strings.h"
#include "server/layers/block.h"

namespace ssm {
namespace {

constexpr int kMaxExpand = 64;
constexpr int kMaxDState = 256;
constexpr int kMaxDConv = 8;
constexpr double kAMin = 1.0, kAMax = 16.0;  // A ~ U(1, 16), mamba_ssm's A_init_range
constexpr double kDNoise = 0.05;             // D = 1 + noise, so tests see it

class Mamba2Mixer final : public Mixer {
 public:
  Mamba2Mixer(const Mamba2Params& p, const LayerContext& ctx) : backend_(ctx.backend) {
    d_model_ = ctx.d_model;
    E_ = p.d_inner(ctx.d_model);
    H_ = p.heads(ctx.d_model);
    P_ = p.headdim;
    G_ = p.ngroups;
    N_ = p.d_state;
    K_ = p.d_conv;
    conv_channels_ = p.conv_channels(ctx.d_model);
    in_width_ = E_ + conv_channels_ + H_;
    norm_before_gate_ = p.norm_before_gate;
    chunk_size_ = p.chunk_size;
    chunked_ = ctx.backend->Supports(Op::kSsdChunkedScan);
    eps_ = ctx.norm_eps;
    auto t = [&](const std::string& name) -> const std::vector<float>& {
      return ctx.tensor("mixer." + name).data;
    };
    Backend* b = ctx.backend;
    in_proj_ = b->PrepareLinear(t("in_proj.weight").data(), ctx.optional("mixer.in_proj.bias"),
                                in_width_, d_model_);
    out_proj_ = b->PrepareLinear(t("out_proj.weight").data(), ctx.optional("mixer.out_proj.bias"),
                                 d_model_, E_);
    conv_ = UploadConv(ctx, conv_channels_, K_);
    A_ = ctx.Upload(NegExp(t("A_log")));
    D_ = ctx.Upload(t("D"));
    dt_bias_ = ctx.Upload(t("dt_bias"));
    norm_w_ = ctx.Upload(t("norm.weight"));
  }

  size_t state_floats() const override {
    return size_t(K_ - 1) * conv_channels_ + size_t(H_) * P_ * N_;
  }
  size_t scratch_floats_per_row() const override {
    return size_t(in_width_) + size_t(conv_channels_) + size_t(E_);
  }

  void Forward(const SeqBatch& batch, const float* x, float* out, StateView state,
               float* scratch) override {
    const int rows = batch.rows();
    float* zxbcdt = scratch;                         // (rows, 2E + 2GN + H)
    float* xbc = zxbcdt + size_t(rows) * in_width_;  // (rows, E + 2GN): silu(conv)
    float* y = xbc + size_t(rows) * conv_channels_;  // (rows, E)
    backend_->Linear(*in_proj_, x, d_model_, rows, zxbcdt, in_width_);

    CausalConvArgs conv;
    conv.channels = conv_channels_;
    conv.kernel = K_;
    conv.x = zxbcdt + E_;  // the x, B, C columns
    conv.ld_x = in_width_;
    conv.w = conv_.w->data();
    conv.bias = conv_.bias->data();
    conv.tail = state;  // tail first in the slot
    conv.out = xbc;
    conv.ld_out = conv_channels_;
    backend_->CausalConv(batch, conv);

    SsdScanArgs scan;
    scan.heads = H_;
    scan.head_dim = P_;
    scan.groups = G_;
    scan.d_state = N_;
    scan.x = xbc;
    scan.ld_x = conv_channels_;
    scan.B = xbc + E_;
    scan.C = xbc + E_ + size_t(G_) * N_;
    scan.ld_bc = conv_channels_;
    scan.dt = zxbcdt + E_ + conv_channels_;
    scan.ld_dt = in_width_;
    scan.dt_bias = dt_bias_->data();
    scan.A = A_->data();
    scan.D = D_->data();
    scan.state = {state.base + size_t(K_ - 1) * conv_channels_, state.slot_stride};
    scan.out = y;
    scan.ld_out = E_;
    if (batch.offline && chunked_) {
      backend_->SsdChunkedScan(batch, scan, chunk_size_);
    } else {
      backend_->SsdScan(batch, scan);
    }

    // gated by the z columns of zxbcdt
    const auto norm = GatedRmsNormArgs::InPlace(y, E_, E_ / G_, norm_before_gate_, eps_, zxbcdt,
                                                in_width_, norm_w_->data());
    backend_->GatedRmsNorm(norm, rows);

    backend_->Linear(*out_proj_, y, E_, rows, out, d_model_);
  }

 private:
  Backend* backend_;
  int d_model_, E_, H_, P_, G_, N_, K_, conv_channels_, in_width_, chunk_size_;
  bool norm_before_gate_;
  bool chunked_;  // the backend has the chunked form, which offline passes take
  float eps_;
  std::unique_ptr<LinearWeights> in_proj_, out_proj_;
  ConvWeights conv_;                                  // (K, E + 2GN), (E + 2GN)
  std::unique_ptr<Buffer> A_, D_, dt_bias_, norm_w_;  // (H), (H), (H), (E)
};

}  // namespace

Status Mamba2Params::Parse(ConfigReader* r, int) {
  SSM_RETURN_IF_ERROR(r->Get("d_state", &d_state));
  SSM_RETURN_IF_ERROR(r->Get("d_conv", &d_conv));
  SSM_RETURN_IF_ERROR(r->Get("expand", &expand));
  SSM_RETURN_IF_ERROR(r->Get("headdim", &headdim));
  SSM_RETURN_IF_ERROR(r->Get("ngroups", &ngroups));
  SSM_RETURN_IF_ERROR(r->Get("chunk_size", &chunk_size));
  SSM_RETURN_IF_ERROR(r->Get("conv_bias", &conv_bias));
  SSM_RETURN_IF_ERROR(r->Get("bias", &bias));
  SSM_RETURN_IF_ERROR(r->Get("norm_before_gate", &norm_before_gate));
  return OkStatus();
}

Status Mamba2Params::Validate(const std::string& path, int d_model) const {
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "d_state", d_state, 1, kMaxDState));
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "d_conv", d_conv, 1, kMaxDConv));
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "expand", expand, 1, kMaxExpand));
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "headdim", headdim, 1, kMaxConfigDim));
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "ngroups", ngroups, 1, kMaxConfigDim));
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "chunk_size", chunk_size, 1, kMaxConfigDim));
  const int64_t e = int64_t(expand) * d_model;
  if (e % headdim != 0)
    return InvalidArgumentError(fmt::format(
        "{}headdim: expected a divisor of expand * d_model ({}), found {}", path, e, headdim));
  const int64_t h = e / headdim;
  if (h % ngroups != 0)
    return InvalidArgumentError(fmt::format(
        "{}ngroups: expected a divisor of the number of heads ({} = expand * d_model / headdim), "
        "found {}",
        path, h, ngroups));
  return OkStatus();
}

ConfigJson Mamba2Params::ToJson() const {
  return {{"type", type()},
          {"d_state", d_state},
          {"d_conv", d_conv},
          {"expand", expand},
          {"headdim", headdim},
          {"ngroups", ngroups},
          {"chunk_size", chunk_size},
          {"conv_bias", conv_bias},
          {"bias", bias},
          {"norm_before_gate", norm_before_gate}};
}

std::string Mamba2Params::ToString() const {
  return fmt::format(
      "mamba2(d_state={} d_conv={} expand={} headdim={} ngroups={} chunk_size={}{}{}{})", d_state,
      d_conv, expand, headdim, ngroups, chunk_size, conv_bias ? " conv_bias" : "",
      bias ? " bias" : "", norm_before_gate ? " norm_before_gate" : "");
}

std::vector<TensorSpec> Mamba2Params::Tensors(const std::string& prefix, int d_model) const {
  const int64_t d = d_model, e = d_inner(d_model), h = heads(d_model),
                conv = conv_channels(d_model);
  const std::string m = prefix + "mixer.";
  std::vector<TensorSpec> specs;
  specs.push_back({prefix + "norm.weight", {d}});
  specs.push_back({m + "in_proj.weight", {e + conv + h, d}});  // rows: z, x, B, C, dt
  if (bias) specs.push_back({m + "in_proj.bias", {e + conv + h}});
  specs.push_back({m + "conv1d.weight", {conv, 1, d_conv}});  // over the x, B, C rows
  if (conv_bias) specs.push_back({m + "conv1d.bias", {conv}});
  specs.push_back({m + "dt_bias", {h}});
  specs.push_back({m + "A_log", {h}});
  specs.push_back({m + "D", {h}});
  specs.push_back({m + "norm.weight", {e}});
  specs.push_back({m + "out_proj.weight", {d, e}});
  if (bias) specs.push_back({m + "out_proj.bias", {d}});
  return specs;
}

// The conv tail (d_conv - 1, E + 2GN) and S (H, headdim, d_state).
size_t Mamba2Params::state_floats(int d_model) const {
  return size_t(d_conv - 1) * conv_channels(d_model) + size_t(d_inner(d_model)) * d_state;
}

// Counted per frame (one multiply-add = 2 FLOPs): in_proj and out_proj, 2 * in * out each; the
// causal conv, 2 * (E + 2GN) * d_conv; the scan, 5 * E * N (decay*S, delta*x*B, add, *C and
// the sum over N). The norms, softplus and the gate are O(E) and left out.
double Mamba2Params::flops_per_frame(int d_model) const {
  const double d = d_model, e = d_inner(d_model), conv = conv_channels(d_model), h = heads(d_model);
  return 2.0 * d * (e + conv + h) + 2.0 * e * d + 2.0 * conv * d_conv + 5.0 * e * d_state;
}

void Mamba2Params::InitTensor(const TensorSpec& spec, Rng* rng, std::vector<float>* out) const {
  if (EndsWith(spec.name, "mixer.A_log")) {
    FillWith(out, [&](size_t) { return std::log(rng->Uniform(kAMin, kAMax)); });
  } else if (EndsWith(spec.name, "mixer.D")) {
    FillWith(out, [&](size_t) { return 1.0 + kDNoise * rng->Normal(); });
  } else if (EndsWith(spec.name, "mixer.dt_bias")) {
    FillWith(out, [&](size_t) { return SampleDtBias(rng); });
  } else {
    InitDefault(spec, rng, out);
  }
}

StatusOr<std::unique_ptr<Layer>> Mamba2Params::Create(const LayerContext& ctx) const {
  SSM_RETURN_IF_ERROR(
      RequireOps(*ctx.backend, {Op::kSsdScan, Op::kGatedRmsNorm}, "layer type \"mamba2\""));
  return MakePreNormBlock(ctx, std::make_unique<Mamba2Mixer>(*this, ctx));
}

}  // namespace ssm
