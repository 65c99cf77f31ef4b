// The worker pool the cpu kernels' parallel loops run on (kernels/base/worker_pool.h): every index
// once, parts really taken by other threads, a loop inside a loop on the caller alone, callers
// on many threads at once, idle workers that sleep rather than spin, and their CPU counted.
#include "kernels/base/worker_pool.h"

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "kernels/base/cpu_time.h"

namespace ssm {
namespace {

using Clock = std::chrono::steady_clock;

TEST(WorkerPoolTest, ParallelForCallsEveryIndexOnceInContiguousParts) {
  for (int threads : {1, 2, 3, 7}) {
    for (int64_t n : {0, 1, 2, 5, 97, 1000}) {
      std::vector<std::atomic<int>> calls(static_cast<size_t>(n));
      std::atomic<int> parts{0};
      ParallelFor(threads, n, [&](int64_t begin, int64_t end) {
        ASSERT_LT(begin, end);
        parts.fetch_add(1);
        for (int64_t i = begin; i < end; ++i) calls[size_t(i)].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(calls[size_t(i)].load(), 1) << i;
      EXPECT_LE(parts.load(), std::min<int64_t>(4 * threads, n)) << threads << " " << n;
    }
  }
}

TEST(WorkerPoolTest, TaskQueueHandsOutEveryIndexOnce) {
  for (int threads : {1, 2, 5}) {
    const int64_t n = 333;
    std::vector<std::atomic<int>> calls(n);
    TaskQueue queue(n);
    ParallelRun(threads, [&](int, int) {
      for (int64_t i; queue.Next(&i);) calls[size_t(i)].fetch_add(1);
    });
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(calls[size_t(i)].load(), 1) << i;
  }
}

// Parts that take a while: over a few loops the woken worker takes some of them, on its own
// thread, while the caller takes the others.
TEST(WorkerPoolTest, WokenWorkersTakePartsOnTheirOwnThreads) {
  bool parallel = false;
  for (int loop = 0; loop < 50 && !parallel; ++loop) {
    std::mutex mutex;
    std::set<std::thread::id> ids;
    ParallelRun(2, [&](int part, int parts) {
      ASSERT_EQ(parts, 2);
      ASSERT_LT(part, 2);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      std::lock_guard<std::mutex> lock(mutex);
      ids.insert(std::this_thread::get_id());
    });
    parallel = ids.size() == 2;
  }
  EXPECT_TRUE(parallel) << "no loop ran on two threads";
}

TEST(WorkerPoolTest, ALoopInsideALoopRunsOnItsCallerAlone) {
  std::mutex mutex;
  std::vector<std::pair<std::thread::id, std::thread::id>> inner;  // (outer part's, inner's)
  ParallelRun(2, [&](int, int) {
    const std::thread::id outer = std::this_thread::get_id();
    ParallelRun(2, [&](int, int parts) {
      EXPECT_EQ(parts, 2);
      std::lock_guard<std::mutex> lock(mutex);
      inner.emplace_back(outer, std::this_thread::get_id());
    });
  });
  ASSERT_EQ(inner.size(), 4u);
  for (const auto& [outer, thread] : inner) EXPECT_EQ(outer, thread);
}

// Engines of several models step on their own threads: loops from many callers at once all
// finish with every index once, each on the pool or on its caller alone.
TEST(WorkerPoolTest, CallersOnManyThreadsAtOnce) {
  constexpr int kCallers = 4, kLoops = 300, kN = 257;
  std::vector<int64_t> sums(kCallers, 0);
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      for (int loop = 0; loop < kLoops; ++loop) {
        std::vector<int64_t> values(kN, 0);
        ParallelFor(3, kN, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) values[size_t(i)] = i + loop;
        });
        for (int64_t v : values) sums[c] += v;
      }
    });
  }
  for (auto& t : callers) t.join();
  const int64_t expected =
      int64_t(kLoops) * (kN * (kN - 1) / 2) + int64_t(kN) * (int64_t(kLoops) * (kLoops - 1) / 2);
  for (int c = 0; c < kCallers; ++c) EXPECT_EQ(sums[c], expected) << c;
}

// With no spin at all every loop wakes sleeping workers and waits asleep for them.
TEST(WorkerPoolTest, SleepingWorkersWakeForEveryLoop) {
  WorkerPool& pool = WorkerPool::Process();
  const int spin = pool.spin_us();
  pool.set_spin_us(0);
  for (int loop = 0; loop < 200; ++loop) {
    std::vector<int> values(64, 0);
    ParallelFor(2, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) values[size_t(i)] = int(i) * loop;
    });
    for (int i = 0; i < 64; ++i) ASSERT_EQ(values[size_t(i)], i * loop);
    if (loop % 20 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  pool.set_spin_us(spin);
}

// Between steps the workers sleep: an idle process with a started pool uses almost no CPU.
TEST(WorkerPoolTest, IdleWorkersSleepAfterTheirSpin) {
  ParallelFor(4, 4, [](int64_t, int64_t) {});                  // at least 3 workers started
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // past their spin
  const double before = ProcessCpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const double used = ProcessCpuSeconds() - before;
  EXPECT_LT(used, 0.1) << "idle workers used " << used << " s of CPU in 0.5 s";
}

// The workers' CPU clocks (what the server exports as ssm_worker_pool_cpu_seconds_total): at
// least the CPU that parts run on workers measured on their own threads, at most what the whole
// process used; and the idle spin that follows a loop is counted once it ends.
TEST(WorkerPoolTest, WorkerCpuAndIdleSpinAreCounted) {
  WorkerPool& pool = WorkerPool::Process();
  const int spin = pool.spin_us();
  pool.set_spin_us(2000);
  ParallelRun(2, [](int, int) {});  // the worker started, before the figures are read
  const double cpu_before = pool.WorkerCpuSeconds(), spin_before = pool.WorkerIdleSpinSeconds();
  const double process_before = ProcessCpuSeconds();
  const Clock::time_point start = Clock::now();
  const std::thread::id caller = std::this_thread::get_id();
  std::mutex mutex;
  double on_workers = 0;  // CPU seconds of the parts that ran on a worker
  for (int loop = 0; loop < 50 && on_workers == 0; ++loop) {
    ParallelRun(2, [&](int, int) {
      const double start = ThreadCpuSeconds();
      volatile double x = 1;
      while (ThreadCpuSeconds() - start < 0.005) x = x * 1.000001 + 1e-9;  // 5 ms of CPU
      if (std::this_thread::get_id() == caller) return;
      std::lock_guard<std::mutex> lock(mutex);
      on_workers += ThreadCpuSeconds() - start;
    });
  }
  ASSERT_GT(on_workers, 0) << "no part ran on a worker";
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // past the workers' spin
  const double worker_cpu = pool.WorkerCpuSeconds() - cpu_before;
  const double idle_spin = pool.WorkerIdleSpinSeconds() - spin_before;
  const double process = ProcessCpuSeconds() - process_before;
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  pool.set_spin_us(spin);
  EXPECT_GE(worker_cpu, on_workers);
  EXPECT_LE(worker_cpu, process + 0.001);  // the clocks are read at slightly different times
  EXPECT_GE(idle_spin, 0.002) << "the spin after the last loop is 2 ms at least";
  // Wall time (a spinning worker may lose its core): at most the test's for the one worker woken,
  // plus the spin after the warm-up loop, which may end after the first reading.
  EXPECT_LE(idle_spin, elapsed + 0.003);
}

}  // namespace
}  // namespace ssm
