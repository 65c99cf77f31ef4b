#include "server/service/call_registry.h"

namespace ssm {

CallRegistry::CallRegistry(std::chrono::milliseconds sweep_period)
    : sweep_period_(sweep_period), sweeper_([this] { Sweep(); }) {}

CallRegistry::~CallRegistry() { Stop(); }

void CallRegistry::Add(LiveCall* call) {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.insert(call);
}

void CallRegistry::Remove(LiveCall* call) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.erase(call);
  }
  cv_.notify_all();
}

size_t CallRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_.size();
}

void CallRegistry::StartDrain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;  // under mu_: a call added after this sees it when it opens
  for (LiveCall* call : calls_) call->Drain();
}

bool CallRegistry::WaitUntilEmpty(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_until(lock, deadline, [this] { return calls_.empty(); });
}

void CallRegistry::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
}

void CallRegistry::Sweep() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, sweep_period_, [this] { return stop_; });
    if (stop_) break;
    const auto now = std::chrono::steady_clock::now();
    for (LiveCall* call : calls_) call->CheckIdle(now);
  }
}

}  // namespace ssm
