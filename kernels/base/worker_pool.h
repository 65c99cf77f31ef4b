// The process's worker threads for parallel loops: the cpu kernels and the log-mel frontend.
//
// A real-time server runs many small steps, each a short run of parallel ops. Worker threads
// that are made once, wait for the next loop by spinning for a short while (the gap between two
// ops of a step is microseconds) and then sleep (the gap between two steps is milliseconds),
// cost less than a fork/join per op and leave the cores to the gRPC threads between steps
// (docs/design.md §4, "Threads per step").
//
// A loop splits its index range into contiguous parts that threads take one after the other
// (ParallelFor), or hands indices out one at a time (TaskQueue). Either way each index is
// computed by one thread with the same code, so the thread count never changes a result. One
// loop runs on the pool at a time: a loop started while another one holds it (another engine's
// step, or a loop inside a loop) runs on its caller's thread alone.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace ssm {

class WorkerPool {
 public:
  using Body = void (*)(void* context, int part, int parts);

  // The process's pool, made on first use; its threads are started as loops ask for them.
  static WorkerPool& Process();
  // The cores this process may run on (its CPU affinity), at least 1.
  static int Cores();
  // A thread count as asked for: `threads` when positive, else (0, "all") Cores().
  static int ThreadsOrCores(int threads) { return threads > 0 ? threads : Cores(); }

  // Calls body(context, p, parts) once for each part p in [0, parts) on up to `threads` threads
  // (the caller's among them) and returns when all have returned. Threads take the next part not
  // yet taken, so the caller goes on alone when the workers it woke are slow to come (their core
  // busy with other threads): a loop never waits for a worker that has not started on it. When
  // the pool is busy, the caller runs every part.
  void Run(int parts, int threads, Body body, void* context);
  // The same for a callable: body(p, parts).
  template <class F>
  void Run(int parts, int threads, F& body) {
    Run(
        parts, threads, [](void* c, int part, int count) { (*static_cast<F*>(c))(part, count); },
        const_cast<void*>(static_cast<const void*>(&body)));
  }

  // How long an idle worker spins before it sleeps, and the caller before it sleeps waiting for
  // the parts that workers took (default 50 us).
  void set_spin_us(int us) { spin_us_.store(std::max(0, us), std::memory_order_relaxed); }
  int spin_us() const { return spin_us_.load(std::memory_order_relaxed); }

  // CPU seconds the pool's worker threads (not the callers of Run) have used since they started,
  // every thread's clock read now; and the wall seconds they spent spinning while idle, waiting
  // for the next loop, counted as each spin ends (so a spin in progress is not yet in it). The
  // server exports both (ssm_worker_pool_*_seconds_total) so that the engine's CPU can be told
  // from the rest of the process. Thread-safe.
  double WorkerCpuSeconds() const;
  double WorkerIdleSpinSeconds() const;

  static constexpr int kMaxThreads = 256;
  static constexpr int kMaxParts = 65535;

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

 private:
  struct Slot;
  struct DoneSignal;
  WorkerPool();
  void Grow(int threads);
  void WorkerLoop(Slot* slot);
  // Takes and runs parts of the current loop until none is left.
  void RunParts();
  void PartDone();
  void WaitForParts();

  std::atomic<int> spin_us_{50};
  std::atomic<bool> busy_{false};  // a loop is running
  Slot* slots_[kMaxThreads] = {};  // slots_[w] for worker thread w >= 1, made by Grow
  int started_ = 1;                // threads including the caller's; written only while busy
  // Workers whose slot (with its CPU clock) may be read by any thread: slots_[1 .. clocks_ - 1].
  std::atomic<int> clocks_{1};
  std::atomic<int64_t> idle_spin_ns_{0};
  // The current loop: (generation << 32) | (parts << 16) | next part to take. A thread reads
  // body_ and context_ after loading it and keeps them only if its compare-exchange of the next
  // part succeeds, which proves they belong to that loop (docs in the .cc).
  std::atomic<uint64_t> loop_{0};
  std::atomic<Body> body_{nullptr};
  std::atomic<void*> context_{nullptr};
  std::atomic<int> remaining_{0};  // parts of the current loop not yet finished
  std::atomic<bool> caller_sleeping_{false};
  DoneSignal* done_;
};

// Calls body(part, parts) for each part in [0, threads) on up to `threads` threads of the
// process's pool (threads <= 1: on the caller alone). Parts may share a thread.
template <class F>
void ParallelRun(int threads, F&& body) {
  if (threads <= 1) {
    body(0, 1);
    return;
  }
  WorkerPool::Process().Run(threads, threads, body);
}

// Calls body(begin, end) over contiguous parts of [0, n) on up to `threads` threads. A few parts
// per thread, so that a thread that gets less of its core leaves its share to the others.
template <class F>
void ParallelFor(int threads, int64_t n, F&& body) {
  if (n <= 0) return;
  if (threads <= 1 || n == 1) {
    body(int64_t(0), n);
    return;
  }
  constexpr int kPartsPerThread = 4;
  const int parts = int(
      std::min<int64_t>({n, int64_t(threads) * kPartsPerThread, int64_t(WorkerPool::kMaxParts)}));
  auto part_body = [&](int part, int count) { body(n * part / count, n * (part + 1) / count); };
  WorkerPool::Process().Run(parts, threads, part_body);
}

// Indices [0, n) handed out one at a time to the threads of a ParallelRun, each taking the next
// when it is done with one (for tasks of uneven cost):
//   TaskQueue queue(n);
//   ParallelRun(threads, [&](int, int) { for (int64_t i; queue.Next(&i);) ... });
class TaskQueue {
 public:
  explicit TaskQueue(int64_t n) : n_(n) {}
  bool Next(int64_t* i) {
    *i = next_.fetch_add(1, std::memory_order_relaxed);
    return *i < n_;
  }

 private:
  const int64_t n_;
  std::atomic<int64_t> next_{0};
};

}  // namespace ssm
