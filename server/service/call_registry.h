// The live calls of the service: the idle sweep and the drain at shutdown reach every call here.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

namespace ssm {

// A call the registry can time out or drain. Both methods are called without the registry's lock
// (they may call into gRPC, which can run other calls' handlers inline, and those register
// themselves); the registry guarantees the call stays registered, and so alive, until the method
// returns. They must not block.
class LiveCall {
 public:
  virtual ~LiveCall() = default;
  // Ends the call if it has had no activity for longer than its idle timeout.
  virtual void CheckIdle(std::chrono::steady_clock::time_point now) = 0;
  // The server is shutting down: stop taking input, finish what was accepted, end the call.
  virtual void Drain() = 0;
};

class CallRegistry {
 public:
  // Starts a sweeper thread that calls CheckIdle on every call each `sweep_period`.
  explicit CallRegistry(std::chrono::milliseconds sweep_period);
  ~CallRegistry();  // Stop()

  // Thread-safe. A call adds itself before its first read and removes itself in OnDone.
  void Add(LiveCall* call);
  void Remove(LiveCall* call);
  size_t size() const;

  // Refuses new streams from now on (draining() is true) and drains every current call.
  void StartDrain();
  bool draining() const { return draining_.load(); }
  // Waits until no call is left or the deadline passes; true when none is left.
  bool WaitUntilEmpty(std::chrono::steady_clock::time_point deadline);
  void Stop();  // joins the sweeper

 private:
  void Sweep();
  // Calls `visit` on every call registered now, one at a time with mu_ released; a call removed
  // meanwhile is skipped, and Remove of the call being visited waits for the visit to end.
  template <typename Visit>
  void VisitAll(std::unique_lock<std::mutex>& lock, Visit visit);

  const std::chrono::milliseconds sweep_period_;
  std::atomic<bool> draining_{false};
  mutable std::mutex mu_;       // guards calls_, visiting_, visitor_ and stop_
  std::condition_variable cv_;  // signalled when a call is removed, a visit ends, and on Stop
  std::set<LiveCall*> calls_;
  LiveCall* visiting_ = nullptr;  // the call VisitAll is in
  std::thread::id visitor_;       // the thread doing it (its own Remove must not wait)
  bool stop_ = false;
  std::thread sweeper_;  // last: starts after the members above exist
};

}  // namespace ssm
