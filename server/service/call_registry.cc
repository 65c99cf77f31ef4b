#include "server/service/call_registry.h"

#include <vector>

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
    std::unique_lock<std::mutex> lock(mu_);
    calls_.erase(call);
    cv_.wait(lock, [&] { return visiting_ != call || visitor_ == std::this_thread::get_id(); });
  }
  cv_.notify_all();
}

template <typename Visit>
void CallRegistry::VisitAll(std::unique_lock<std::mutex>& lock, Visit visit) {
  const std::vector<LiveCall*> snapshot(calls_.begin(), calls_.end());
  for (LiveCall* call : snapshot) {
    if (calls_.count(call) == 0) continue;  // removed since the snapshot
    visiting_ = call;
    visitor_ = std::this_thread::get_id();
    lock.unlock();
    visit(call);
    lock.lock();
    visiting_ = nullptr;
    cv_.notify_all();
  }
}

size_t CallRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_.size();
}

void CallRegistry::StartDrain() {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;  // under mu_: a call added after this sees it when it opens
  VisitAll(lock, [](LiveCall* call) { call->Drain(); });
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
    VisitAll(lock, [now](LiveCall* call) { call->CheckIdle(now); });
  }
}

}  // namespace ssm
