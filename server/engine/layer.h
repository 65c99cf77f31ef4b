// A sequence-mixing layer of the residual stack. New layer types (Mamba-2, S4D, gated linear
// attention) implement this interface and register in CreateLayer; the engine does not change.
#pragma once

#include <memory>

#include "common/status.h"
#include "kernels/backend.h"
#include "server/model/model.h"

namespace ssm {

class Layer {
 public:
  virtual ~Layer() = default;
  // Floats of recurrent state per stream (conv tail, SSM state, ...): fixed by the config.
  virtual size_t state_floats() const = 0;
  // Floats of backend scratch memory Forward needs per batch row.
  virtual size_t scratch_floats_per_row() const = 0;
  // out = Mixer(x) for every row of the varlen batch, advancing each sequence's state in its
  // slot. x, out: (rows, d_model) in backend memory; state: this layer's slice of the pool.
  virtual void Forward(const SeqBatch& batch, const float* x, float* out, StateView state,
                       float* scratch) = 0;
};

// Layer `index` of `model` with its weights prepared on `backend` (which must outlive it).
StatusOr<std::unique_ptr<Layer>> CreateLayer(const Model& model, int index, Backend* backend);

}  // namespace ssm
