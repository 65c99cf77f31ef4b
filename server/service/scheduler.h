// The batch scheduler of one model engine (docs/design.md §4): a worker thread that gathers ready
// chunks of many streams into one Engine::Step, runs it and hands each stream its outputs.
//
// Threading: Open/Submit/Close may be called from any thread and never block on engine work (they
// take mu_ briefly). Every Engine call except OpenStream (Step, CloseStream) happens on the worker,
// so a stream is never closed while a step uses it. Result and close callbacks run on the worker
// with no lock held; they must not block. The worker updates the model's step metrics
// (ssm_engine_step_seconds, ssm_batch_*, ssm_queue_depth, ssm_realtime_factor,
// ssm_engine_cpu_seconds_total: its own CPU clock around each step).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "server/engine/engine.h"
#include "server/service/metrics.h"

namespace ssm {

// Stream calls submit kRealTime chunks, ProcessFile calls kFile segments. On-time real-time chunks
// are batched first; file segments and real-time chunks sent ahead of real time share the
// background (see Scheduler::PickBatch).
enum class Priority { kRealTime, kFile };

// What one submitted chunk produced.
struct ChunkResult {
  Status status;            // a bad chunk (NaN/Inf, ...) fails alone; its stream is unchanged
  int64_t first_frame = 0;  // stream-wide index of the first output frame
  int frames = 0;
  std::vector<float> outputs;  // (frames, d_out)
};

struct SchedulerOptions {
  int max_batch_streams = 256;                 // chunks per step
  std::chrono::microseconds batch_wait{2000};  // wait for more ready streams, from the
                                               // oldest ready chunk's arrival
  int file_frames_per_step = 2048;  // background frames per step (file segments and chunks
                                    // ahead of real time, all streams together)
  // A real-time chunk whose signal ends more than this ahead of the wall time since its stream
  // opened is ahead of real time: it waits in the background, so a client sending faster than
  // real time cannot delay those that keep to it. Must cover the longest chunk (--max-chunk-ms)
  // plus the client's jitter; the default suits chunks up to 1000 ms.
  std::chrono::milliseconds realtime_lead{2000};
  // While a stream that keeps to real time is open, a step's background work is sized to take
  // about this long, from the measured compute time per frame (at least one chunk per step).
  std::chrono::milliseconds background_step_time{25};
};

class Scheduler {
 public:
  using ResultFn = std::function<void(ChunkResult)>;
  using ClosedFn = std::function<void()>;
  using SnapshotFn = std::function<void(StatusOr<StreamSnapshot>)>;

  // Starts the worker. `engine` and `metrics` must outlive the scheduler; `metrics` nullptr:
  // metrics are off.
  Scheduler(Engine* engine, const SchedulerOptions& options, ModelMetrics* metrics);
  ~Scheduler();  // Stop()

  // Opens a stream on the engine (RESOURCE_EXHAUSTED when all slots are in use) and returns its
  // id. `on_result` is called on the worker once per submitted chunk, in submission order.
  StatusOr<int> Open(Priority priority, ResultFn on_result);
  // Open for a stream that continues from `snapshot` (Engine::RestoreStream's errors).
  StatusOr<int> OpenRestored(Priority priority, ResultFn on_result, const StreamSnapshot& snapshot);
  // Queues the next chunk of `stream`. Never blocks; callers bound how many they have queued.
  void Submit(int stream, std::vector<float> values);
  // Drops the stream's queued chunks and closes it on the worker, after any step using it; then
  // calls `on_closed` (on the worker). No `on_result` call follows `on_closed`. With
  // `on_snapshot`, the stream's snapshot (Engine::SnapshotStream) is taken first, after the last
  // step that used it and without its dropped chunks, and handed to it (on the worker).
  void Close(int stream, ClosedFn on_closed, SnapshotFn on_snapshot = nullptr);
  // Takes the stream's snapshot on the worker between steps (after the results of every chunk
  // stepped so far were delivered, before any chunk still queued) and hands it to `on_snapshot`
  // on the worker. The stream stays open.
  void Snapshot(int stream, SnapshotFn on_snapshot);
  // Runs pending closes, then joins the worker. Streams still open are closed without callback.
  void Stop();

  const Engine& engine() const { return *engine_; }

 private:
  using Clock = std::chrono::steady_clock;
  struct Queued {
    std::vector<float> values;
    Clock::time_point arrival;
    double signal_end_s = 0;  // the stream's signal submitted up to the end of this chunk, s
  };
  struct Lane {
    Priority priority = Priority::kRealTime;
    ResultFn on_result;
    std::deque<Queued> queue;
    Clock::time_point opened;
    double submitted_s = 0;  // signal submitted so far, seconds
  };
  struct Closing {
    int stream;
    ClosedFn on_closed;
    SnapshotFn on_snapshot;  // may be empty
  };
  struct BatchItem {
    int stream;
    Queued chunk;
    ResultFn* on_result;  // points into lanes_; a lane is erased only by the worker
  };

  void Run();  // the worker loop
  StatusOr<int> AddLane(StatusOr<int> stream, Priority priority, ResultFn on_result);
  void CloseNow(Closing& close);  // on the worker, once the lane is gone
  // Moves at most one chunk per ready lane into *batch (mu_ held); see the .cc for the policy.
  void PickBatch(std::vector<BatchItem>* batch);
  // Whether signal up to `signal_end_s` of `lane` is more than realtime_lead ahead of `now`.
  bool AheadOfRealTime(const Lane& lane, double signal_end_s, Clock::time_point now) const;
  // Frames the background may add to the next step (worker, mu_ held).
  double BackgroundFrameBudget(bool realtime_open) const;
  Clock::time_point OldestReadyArrival() const;  // mu_ held; ready_ > 0
  // Whether a step now could take no more chunks than waiting would give it (mu_ held): the batch
  // is full, or every open stream has a chunk ready.
  bool BatchComplete() const;
  void DeliverResults(std::vector<BatchItem>* batch);
  // Updates the step metrics for the step just run on `batch`, which took `step_s` (worker).
  void RecordStep(const std::vector<BatchItem>& batch, double step_s);
  // Updates the compute time per frame estimate from the step just run (worker).
  void RecordStepCost(const std::vector<BatchItem>& batch, double step_s);

  Engine* const engine_;
  const SchedulerOptions options_;
  const double values_per_frame_;   // hop samples (audio) or d_in floats (frames)
  const double frame_rate_;         // output frames per second of signal
  const double values_per_second_;  // values_per_frame_ x frame_rate_
  ModelMetrics* const metrics_;

  // guards lanes_, ready_, closing_, snapshots_, stop_, waiting_, last_background_stream_,
  // background_deferred_since_
  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // signalled on Close, Snapshot, Stop and (see waiting_) Submit
  // What the worker waits for: a Submit wakes it only when that ends its wait (the first ready
  // chunk, or the batch filled), not for every chunk.
  enum class Waiting { kNo, kForWork, kForBatch } waiting_ = Waiting::kNo;
  std::map<int, Lane> lanes_;  // open streams by id
  int ready_ = 0;              // lanes with a queued chunk
  std::vector<Closing> closing_;
  std::vector<std::pair<int, SnapshotFn>> snapshots_;  // requested, not yet taken
  bool stop_ = false;
  int last_background_stream_ = -1;  // round robin among lanes with background chunks
  // When background chunks first waited for on-time ones to catch up; max(): they are not.
  Clock::time_point background_deferred_since_ = Clock::time_point::max();

  // Worker-only: the step's inputs and outputs, reused.
  StepResult step_;
  // Worker-only: decaying sums of step seconds and input frames, for the time per frame.
  double cost_s_ = 0, cost_frames_ = 0;
  // Worker-only: the current ssm_realtime_factor window.
  Clock::time_point window_start_;
  double window_signal_s_ = 0, window_step_s_ = 0;
  std::thread worker_;  // last: starts after everything above is built
};

}  // namespace ssm
