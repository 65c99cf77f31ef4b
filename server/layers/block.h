// The pre-norm residual block of the Mamba family: h <- h + Mixer(RMSNorm(h)) (docs/design.md
// §3). Layer types whose block has this shape build one from their mixer.
#pragma once

#include <memory>

#include "server/layers/layer.h"

namespace ssm {

// ctx.prefix + "norm.weight" is the pre-norm's weight (d_model).
StatusOr<std::unique_ptr<Layer>> MakePreNormBlock(const LayerContext& ctx,
                                                  std::unique_ptr<Mixer> mixer);

// The causal conv's weights, `mixer.conv1d.weight` (C, 1, K) in the channel-last layout the op
// takes, and its bias, zeros when the model has none (conv_bias false).
struct ConvWeights {
  std::unique_ptr<Buffer> w, bias;  // (K, C), (C)
};
ConvWeights UploadConv(const LayerContext& ctx, int channels, int kernel);

// A = -exp(A_log), elementwise.
std::vector<float> NegExp(std::vector<float> a_log);

// Host (C, inner) weights transposed to the channel-innermost (inner, C) layout the ops take,
// e.g. conv1d (C, 1, K) -> (K, C).
std::vector<float> ChannelsLast(const std::vector<float>& w, int channels, int inner);

}  // namespace ssm
