// What every stateful op takes: a varlen batch of sequences and their states in a pool.
#pragma once

#include <cstddef>

namespace ssm {

// Varlen batch: sequence i owns rows [row_offsets[i], row_offsets[i+1]) of every activation
// matrix, in time order, and its recurrent state lives in pool slot slots[i]. Host arrays.
struct SeqBatch {
  int n_seq = 0;
  const int* row_offsets = nullptr;  // n_seq + 1 entries, row_offsets[0] == 0
  const int* slots = nullptr;        // n_seq entries, all distinct
  // The rows are whole inputs run offline (Engine::RunOffline), not live chunks: a layer may
  // take its parallel form (LayerParams::has_parallel_form). Ops ignore it.
  bool offline = false;
  int rows() const { return n_seq == 0 ? 0 : row_offsets[n_seq]; }
};

// One op's per-stream state inside a state pool: slot s starts at base + s * slot_stride floats.
struct StateView {
  float* base = nullptr;
  size_t slot_stride = 0;
  float* slot(int s) const { return base + static_cast<size_t>(s) * slot_stride; }
};

}  // namespace ssm
