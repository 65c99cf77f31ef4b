#include "server/engine/state_pool.h"

#include <fmt/format.h>

namespace ssm {

StatePool::StatePool(Backend* backend, int capacity, const std::vector<size_t>& layer_floats)
    : backend_(backend), capacity_(capacity), in_use_(capacity, false) {
  for (size_t f : layer_floats) {
    offsets_.push_back(slot_floats_);
    slot_floats_ += f;
  }
  memory_ = backend->Allocate(slot_floats_ * capacity);
  for (int s = capacity - 1; s >= 0; --s) free_.push_back(s);
}

StatusOr<int> StatePool::Acquire() {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_.empty()) {
    return ResourceExhaustedError(fmt::format(
        "all {} stream slots are in use; close a stream or raise --max-streams", capacity_));
  }
  const int slot = free_.back();
  free_.pop_back();
  in_use_[slot] = true;
  backend_->Fill(memory_->data() + slot * slot_floats_, slot_floats_, 0.0f);
  return slot;
}

void StatePool::Release(int slot) {
  std::lock_guard<std::mutex> lock(mu_);
  SSM_CHECK(slot >= 0 && slot < capacity_ && in_use_[slot]);
  in_use_[slot] = false;
  free_.push_back(slot);
}

void StatePool::ReadSlot(int slot, float* host) const {
  SSM_CHECK(slot >= 0 && slot < capacity_);
  backend_->CopyToHost(host, memory_->data() + size_t(slot) * slot_floats_, slot_floats_);
  backend_->Synchronize();
}

void StatePool::WriteSlot(int slot, const float* host) {
  SSM_CHECK(slot >= 0 && slot < capacity_);
  backend_->CopyToBackend(memory_->data() + size_t(slot) * slot_floats_, host, slot_floats_);
  backend_->Synchronize();
}

int StatePool::used() const {
  std::lock_guard<std::mutex> lock(mu_);
  return capacity_ - int(free_.size());
}

}  // namespace ssm
