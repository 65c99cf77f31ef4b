#include "kernels/base/worker_pool.h"

#include <pthread.h>
#include <sched.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "kernels/base/cpu_time.h"

namespace ssm {
namespace {

using Clock = std::chrono::steady_clock;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() or for spin_us; true when done() held.
template <class Done>
bool SpinUntil(int spin_us, Done done) {
  if (done()) return true;
  if (spin_us <= 0) return false;
  const auto deadline = Clock::now() + std::chrono::microseconds(spin_us);
  for (int i = 1;; ++i) {
    CpuRelax();
    if (done()) return true;
    if (i % 64 == 0 && Clock::now() >= deadline) return false;
  }
}

}  // namespace

// One worker's signal: `go` counts the loops it was woken for. The sleeping flag and the go counter
// are each stored before the other is read (sequentially consistent), so either the worker sees
// the new loop before it sleeps, or the caller sees it asleep and wakes it under the mutex.
struct alignas(64) WorkerPool::Slot {
  // The worker thread's CPU clock (when has_cpu_clock), set before the slot is published
  // (WorkerPool::clocks_).
  clockid_t cpu_clock{};
  bool has_cpu_clock = false;
  std::atomic<uint64_t> go{0};
  std::atomic<bool> sleeping{false};
  std::mutex mutex;
  std::condition_variable wake;
};

struct WorkerPool::DoneSignal {
  std::mutex mutex;
  std::condition_variable done;
};

WorkerPool::WorkerPool() : done_(new DoneSignal) {}

WorkerPool& WorkerPool::Process() {
  // Never destroyed: its threads sleep until the process exits, and a loop may still run while
  // static objects are destroyed.
  static WorkerPool* pool = new WorkerPool;
  return *pool;
}

int WorkerPool::Cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return int(std::max(1u, std::thread::hardware_concurrency()));
}

void WorkerPool::Grow(int threads) {
  for (; started_ < threads; ++started_) {
    Slot* slot = new Slot;
    slots_[started_] = slot;
    std::thread worker(&WorkerPool::WorkerLoop, this, slot);
    // The thread runs until the process exits, so its clock stays valid after detach.
    slot->has_cpu_clock = pthread_getcpuclockid(worker.native_handle(), &slot->cpu_clock) == 0;
    worker.detach();
    clocks_.store(started_ + 1, std::memory_order_release);
  }
}

double WorkerPool::WorkerCpuSeconds() const {
  const int workers = clocks_.load(std::memory_order_acquire);
  double seconds = 0;
  for (int w = 1; w < workers; ++w) {
    if (slots_[w]->has_cpu_clock) seconds += CpuClockSeconds(slots_[w]->cpu_clock);
  }
  return seconds;
}

double WorkerPool::WorkerIdleSpinSeconds() const {
  return 1e-9 * double(idle_spin_ns_.load(std::memory_order_relaxed));
}

// The loop word and why a thread can trust what it read. Run stores body_, context_ and
// remaining_, then the word (g, parts, 0) with release; a thread loads the word (acquire), reads
// body_ and context_, and claims part i with a compare-exchange (g, parts, i) -> (g, parts, i+1).
// When that succeeds, loop g still had part i untaken, so its caller is still waiting for it, and
// the next loop's body_ and context_ can only be stored after this part is done: what was read
// belongs to loop g. When it fails, what was read is dropped.
void WorkerPool::RunParts() {
  for (;;) {
    uint64_t word = loop_.load(std::memory_order_acquire);
    const int parts = int((word >> 16) & 0xffff), next = int(word & 0xffff);
    if (next >= parts) return;
    const Body body = body_.load(std::memory_order_relaxed);
    void* const context = context_.load(std::memory_order_relaxed);
    if (!loop_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel,
                                     std::memory_order_relaxed))
      continue;
    body(context, next, parts);
    PartDone();
  }
}

void WorkerPool::PartDone() {
  if (remaining_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
      caller_sleeping_.load(std::memory_order_seq_cst)) {
    std::lock_guard<std::mutex> lock(done_->mutex);
    done_->done.notify_one();
  }
}

void WorkerPool::WorkerLoop(Slot* slot) {
  uint64_t seen = 0;
  for (;;) {
    const auto handed = [&] { return slot->go.load(std::memory_order_seq_cst) != seen; };
    const Clock::time_point spin_start = Clock::now();
    const bool woken = SpinUntil(spin_us(), handed);
    idle_spin_ns_.fetch_add(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - spin_start).count(),
        std::memory_order_relaxed);
    if (!woken) {
      std::unique_lock<std::mutex> lock(slot->mutex);
      slot->sleeping.store(true, std::memory_order_seq_cst);
      slot->wake.wait(lock, handed);
      slot->sleeping.store(false, std::memory_order_relaxed);
    }
    seen = slot->go.load(std::memory_order_relaxed);
    RunParts();  // the loop it was woken for, a later one, or none (all parts taken)
  }
}

void WorkerPool::WaitForParts() {
  const auto finished = [&] { return remaining_.load(std::memory_order_acquire) == 0; };
  if (SpinUntil(spin_us(), finished)) return;
  std::unique_lock<std::mutex> lock(done_->mutex);
  caller_sleeping_.store(true, std::memory_order_seq_cst);
  done_->done.wait(lock, [&] { return remaining_.load(std::memory_order_seq_cst) == 0; });
  caller_sleeping_.store(false, std::memory_order_relaxed);
}

void WorkerPool::Run(int parts, int threads, Body body, void* context) {
  parts = std::clamp(parts, 1, kMaxParts);
  threads = std::clamp(threads, 1, std::min(kMaxThreads, parts));
  if (threads == 1 || busy_.exchange(true, std::memory_order_acquire)) {
    for (int p = 0; p < parts; ++p) body(context, p, parts);
    return;
  }
  Grow(threads);
  body_.store(body, std::memory_order_relaxed);
  context_.store(context, std::memory_order_relaxed);
  remaining_.store(parts, std::memory_order_relaxed);
  const uint64_t generation = (loop_.load(std::memory_order_relaxed) >> 32) + 1;
  loop_.store((generation << 32) | (uint64_t(parts) << 16), std::memory_order_seq_cst);
  for (int w = 1; w < threads; ++w) {
    Slot* slot = slots_[w];
    slot->go.fetch_add(1, std::memory_order_seq_cst);
    if (slot->sleeping.load(std::memory_order_seq_cst)) {
      std::lock_guard<std::mutex> lock(slot->mutex);
      slot->wake.notify_one();
    }
  }
  RunParts();
  WaitForParts();
  busy_.store(false, std::memory_order_release);
}

}  // namespace ssm
