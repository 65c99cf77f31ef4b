// Fixed-capacity pool of per-stream recurrent state, allocated once in backend memory.
#pragma once

#include <memory>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "kernels/backend.h"

namespace ssm {

// Slot-major layout: slot s holds every layer's state contiguously, layer l at
// layer_offset(l) floats from the slot start, so opening a stream zeroes one range.
class StatePool {
 public:
  // layer_floats[l]: state floats per stream of layer l.
  StatePool(Backend* backend, int capacity, const std::vector<size_t>& layer_floats);

  int capacity() const { return capacity_; }
  size_t slot_floats() const { return slot_floats_; }
  // Layer l's state as an op sees it: slot s at base + s * slot_floats.
  StateView layer_view(int l) const { return {memory_->data() + offsets_[l], slot_floats_}; }

  // Claims a free slot and zeroes its state. RESOURCE_EXHAUSTED when all are in use.
  // Thread-safe.
  StatusOr<int> Acquire();
  // Returns a slot to the pool. Thread-safe.
  void Release(int slot);
  int used() const;
  // Copies slot s's whole state (slot_floats) to host memory, or from it. The slot must be in
  // use and not in a step running meanwhile.
  void ReadSlot(int slot, float* host) const;
  void WriteSlot(int slot, const float* host);

 private:
  Backend* backend_;
  int capacity_;
  size_t slot_floats_ = 0;
  std::vector<size_t> offsets_;
  std::unique_ptr<Buffer> memory_;
  mutable std::mutex mu_;  // guards free_ and in_use_
  std::vector<int> free_;  // stack of free slots, lowest on top
  std::vector<bool> in_use_;
};

}  // namespace ssm
