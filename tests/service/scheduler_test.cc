// The batch scheduler's policy, driven directly on a small cpu engine: chunks sent ahead of real
// time wait in the background with file segments and never delay chunks that keep to real time,
// yet run as fast as the engine allows; each stream's outputs stay exact.
#include "server/service/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/engine/engine_test_util.h"

namespace ssm {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kSampleRate = 16000;         // SmallAudioConfig's
constexpr int kFastChunkSamples = 32000;   // 2 s: 200 frames
constexpr int kOnTimeChunkSamples = 1600;  // 100 ms

// Results in the order the worker delivered them, from any number of streams.
class Recorder {
 public:
  struct Entry {
    int stream;
    ChunkResult result;
  };
  Scheduler::ResultFn For(int* stream) {
    return [this, stream](ChunkResult result) {
      std::lock_guard<std::mutex> lock(mu_);
      entries_.push_back({*stream, std::move(result)});
      cv_.notify_all();
    };
  }
  // Waits until `n` results have arrived; false after 30 s.
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return entries_.size() >= n; });
  }
  std::vector<Entry> entries() {
    std::lock_guard<std::mutex> lock(mu_);
    return entries_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Entry> entries_;
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = testing::RandomModel(testing::SmallAudioConfig(), 31);
    engine_ = testing::MakeEngine(model_);
  }

  // Opens a stream whose results go to recorder_, and returns its id.
  int Open(Scheduler& scheduler, Priority priority) {
    auto* id = new int(-1);  // the callback reads the id; owned by ids_
    ids_.emplace_back(id);
    auto stream = scheduler.Open(priority, recorder_.For(id));
    EXPECT_TRUE(stream.ok()) << stream.status().ToString();
    *id = *stream;
    return *stream;
  }

  // Blocks the worker inside a step until the returned promise is set, so that everything
  // submitted meanwhile is queued when the next step is picked.
  std::promise<void> HoldWorker(Scheduler& scheduler) {
    std::promise<void> release, held;
    auto release_future = std::make_shared<std::shared_future<void>>(release.get_future().share());
    auto held_future = held.get_future();
    auto held_promise = std::make_shared<std::promise<void>>(std::move(held));
    auto stream = scheduler.Open(Priority::kRealTime, [=](ChunkResult) {
      held_promise->set_value();
      release_future->wait();
    });
    EXPECT_TRUE(stream.ok());
    scheduler.Submit(*stream, std::vector<float>(kOnTimeChunkSamples, 0.1f));
    held_future.wait();
    return release;
  }

  testing::Rng rng_{testing::TestSeed()};
  std::shared_ptr<const Model> model_;
  std::unique_ptr<Engine> engine_;
  Recorder recorder_;
  std::vector<std::unique_ptr<int>> ids_;
};

SchedulerOptions TestOptions() {
  SchedulerOptions o;
  o.batch_wait = std::chrono::microseconds(0);
  o.realtime_lead = milliseconds(100);
  o.file_frames_per_step = 200;  // one fast chunk per step
  return o;
}

// Eight streams have queued 8 s each, far ahead of real time; one stream keeps to real time.
// Its chunks run first: no fast chunk is delivered before its last one (the old policy, one chunk
// per stream per step, delivered eight fast chunks between any two of its chunks).
TEST_F(SchedulerTest, ChunksAheadOfRealTimeDoNotDelayOnTimeChunks) {
  constexpr int kFast = 8, kFastChunks = 4, kOnTimeChunks = 3;
  Scheduler scheduler(engine_.get(), TestOptions(), nullptr);
  const int on_time = Open(scheduler, Priority::kRealTime);
  // 300 ms later, 300 ms of its signal are due: on time.
  std::this_thread::sleep_for(milliseconds(300));
  std::promise<void> release = HoldWorker(scheduler);
  std::map<int, std::vector<float>> sent;
  for (int i = 0; i < kFast; ++i) {
    const int fast = Open(scheduler, Priority::kRealTime);
    for (int k = 0; k < kFastChunks; ++k) {
      std::vector<float> chunk = testing::RandomInput(rng_, model_->config(), kFastChunkSamples);
      sent[fast].insert(sent[fast].end(), chunk.begin(), chunk.end());
      scheduler.Submit(fast, std::move(chunk));
    }
  }
  for (int k = 0; k < kOnTimeChunks; ++k) {
    std::vector<float> chunk = testing::RandomInput(rng_, model_->config(), kOnTimeChunkSamples);
    sent[on_time].insert(sent[on_time].end(), chunk.begin(), chunk.end());
    scheduler.Submit(on_time, std::move(chunk));
  }
  release.set_value();
  ASSERT_TRUE(recorder_.WaitFor(kFast * kFastChunks + kOnTimeChunks));

  int fast_before_last_on_time = 0, fast_seen = 0, on_time_seen = 0;
  std::map<int, std::vector<float>> outputs;
  for (const Recorder::Entry& e : recorder_.entries()) {
    ASSERT_TRUE(e.result.status.ok()) << e.result.status.ToString();
    EXPECT_EQ(e.result.first_frame, int64_t(outputs[e.stream].size()) / engine_->d_out())
        << "stream " << e.stream << ": chunks out of order";
    outputs[e.stream].insert(outputs[e.stream].end(), e.result.outputs.begin(),
                             e.result.outputs.end());
    if (e.stream == on_time) {
      if (++on_time_seen == kOnTimeChunks) fast_before_last_on_time = fast_seen;
    } else {
      ++fast_seen;
    }
  }
  EXPECT_EQ(fast_before_last_on_time, 0);
  for (const auto& [stream, values] : sent)
    EXPECT_EQ(outputs[stream], testing::RunOfflineOne(*engine_, values)) << "stream " << stream;
}

// File segments and chunks ahead of real time share the background round robin: with a budget of
// one chunk per step, every stream with background work is served once before any is served
// twice, and each stream's chunks keep their order.
TEST_F(SchedulerTest, BackgroundIsSharedRoundRobinByFilesAndFastStreams) {
  constexpr int kFast = 3, kChunks = 4;
  Scheduler scheduler(engine_.get(), TestOptions(), nullptr);
  std::promise<void> release = HoldWorker(scheduler);
  std::vector<int> background;
  for (int i = 0; i < kFast + 1; ++i) {
    const int stream = Open(scheduler, i == kFast ? Priority::kFile : Priority::kRealTime);
    background.push_back(stream);
    for (int k = 0; k < kChunks; ++k)
      scheduler.Submit(stream, testing::RandomInput(rng_, model_->config(), kFastChunkSamples));
  }
  release.set_value();
  ASSERT_TRUE(recorder_.WaitFor(background.size() * kChunks));
  const std::vector<Recorder::Entry> entries = recorder_.entries();
  ASSERT_EQ(entries.size(), background.size() * kChunks);
  for (size_t round = 0; round < kChunks; ++round) {
    std::vector<int> served;
    for (size_t i = 0; i < background.size(); ++i)
      served.push_back(entries[round * background.size() + i].stream);
    std::sort(served.begin(), served.end());
    EXPECT_EQ(served, background) << "round " << round;
  }
}

// With no stream keeping to real time, a stream far ahead of real time is not held to it: 40 s of
// signal take the engine's time, not 40 s.
TEST_F(SchedulerTest, AheadOfRealTimeStreamRunsAsFastAsTheEngine) {
  constexpr int kChunks = 20;  // 2 s each
  Scheduler scheduler(engine_.get(), TestOptions(), nullptr);
  const int fast = Open(scheduler, Priority::kRealTime);
  const Clock::time_point start = Clock::now();
  for (int k = 0; k < kChunks; ++k)
    scheduler.Submit(fast, testing::RandomInput(rng_, model_->config(), kFastChunkSamples));
  ASSERT_TRUE(recorder_.WaitFor(kChunks));
  const double wall_s = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_LT(wall_s, 0.25 * kChunks * kFastChunkSamples / kSampleRate);
}

// The batch wait (--batch-wait-ms) is for chunks of other streams: once every open stream has
// a chunk ready, waiting cannot add to the step, so it starts at once. While an open stream has
// none, the step waits for it up to batch_wait.
TEST_F(SchedulerTest, BatchWaitEndsOnceEveryOpenStreamHasAChunkReady) {
  SchedulerOptions options = TestOptions();
  options.batch_wait = std::chrono::milliseconds(600);
  options.realtime_lead = std::chrono::hours(1);
  Scheduler scheduler(engine_.get(), options, nullptr);
  const int a = Open(scheduler, Priority::kRealTime);
  const int b = Open(scheduler, Priority::kRealTime);
  auto answered_within = [&](size_t results) {
    const Clock::time_point start = Clock::now();
    EXPECT_TRUE(recorder_.WaitFor(results));
    return std::chrono::duration<double>(Clock::now() - start).count();
  };
  // Both streams ready: no wait. (The engine step itself takes a few milliseconds.)
  scheduler.Submit(a, testing::RandomInput(rng_, model_->config(), kOnTimeChunkSamples));
  scheduler.Submit(b, testing::RandomInput(rng_, model_->config(), kOnTimeChunkSamples));
  EXPECT_LT(answered_within(2), 0.3);
  // Only one of the two: the step waits the batch wait for the other.
  scheduler.Submit(a, testing::RandomInput(rng_, model_->config(), kOnTimeChunkSamples));
  EXPECT_GT(answered_within(3), 0.5);
  // The other stream closed: the one left needs no wait.
  scheduler.Close(b, nullptr);
  scheduler.Submit(a, testing::RandomInput(rng_, model_->config(), kOnTimeChunkSamples));
  EXPECT_LT(answered_within(4), 0.3);
}

// With one chunk per step (--max-batch-streams 1) a file is not starved by a stream that always
// has an on-time chunk queued: it gets the place once it has waited kMaxBackgroundDeferral (1 s).
TEST_F(SchedulerTest, WithOneStreamPerStepFilesStillProgressNextToLiveStreams) {
  SchedulerOptions options = TestOptions();
  options.max_batch_streams = 1;
  options.realtime_lead = std::chrono::hours(1);  // every live chunk is on time
  Scheduler scheduler(engine_.get(), options, nullptr);
  std::atomic<size_t> live_done{0};
  std::atomic<bool> file_done{false};
  auto live = scheduler.Open(Priority::kRealTime, [&](ChunkResult) { ++live_done; });
  auto file = scheduler.Open(Priority::kFile, [&](ChunkResult) { file_done = true; });
  ASSERT_TRUE(live.ok() && file.ok());
  // The file segment arrives behind queued live chunks, and 32 stay queued (the engine never
  // catches up) for up to 5 s.
  std::promise<void> release = HoldWorker(scheduler);
  size_t live_sent = 0;
  for (; live_sent < 32; ++live_sent)
    scheduler.Submit(*live, std::vector<float>(kSampleRate, 0.05f));  // 1 s
  scheduler.Submit(*file, testing::RandomInput(rng_, model_->config(), kOnTimeChunkSamples));
  const Clock::time_point start = Clock::now();
  release.set_value();
  while (!file_done && Clock::now() - start < std::chrono::seconds(5)) {
    if (live_sent - live_done < 32) {
      scheduler.Submit(*live, std::vector<float>(kSampleRate, 0.05f));  // 1 s
      ++live_sent;
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  const double waited = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_TRUE(file_done) << "the file segment never ran while the live stream had chunks queued";
  EXPECT_GT(waited, 0.5);  // the file waited for the live backlog first
  EXPECT_LT(waited, 2.0);  // ~1 s: kMaxBackgroundDeferral
  while (live_done < live_sent) std::this_thread::sleep_for(milliseconds(1));
}

}  // namespace
}  // namespace ssm
