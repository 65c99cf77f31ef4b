#include "server/service/scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

#include "kernels/base/cpu_time.h"

namespace ssm {

namespace {

// ssm_realtime_factor is recomputed once this much wall time has passed with steps in it.
constexpr std::chrono::seconds kRealtimeFactorWindow(1);
// Background chunks wait at most this long for a backlog of on-time chunks to clear, so they
// progress even while real-time work alone keeps the engine busy.
constexpr std::chrono::milliseconds kMaxBackgroundDeferral(1000);
// Per step, the weight of earlier steps in the compute time per frame estimate.
constexpr double kStepCostDecay = 0.9;
// How much faster than ours a client's clock may run (audio devices: about 0.01%, rarely 0.1%),
// so that a stream kept to real time for hours is never taken for one sent ahead of it.
constexpr double kClientClockTolerance = 0.01;

}  // namespace

Scheduler::Scheduler(Engine* engine, const SchedulerOptions& options, ModelMetrics* metrics)
    : engine_(engine),
      options_(options),
      values_per_frame_(engine->frontend().takes_samples()
                            ? double(engine->model().config().frontend.hop_length)
                            : double(engine->model().config().d_in)),
      frame_rate_(engine->model().config().frame_rate()),
      values_per_second_(engine->model().config().input_values_per_second()),
      metrics_(metrics),
      window_start_(Clock::now()),
      worker_([this] { Run(); }) {}

Scheduler::~Scheduler() { Stop(); }

StatusOr<int> Scheduler::Open(Priority priority, ResultFn on_result) {
  return AddLane(engine_->OpenStream(), priority, std::move(on_result));  // thread-safe
}

StatusOr<int> Scheduler::OpenRestored(Priority priority, ResultFn on_result,
                                      const StreamSnapshot& snapshot) {
  return AddLane(engine_->RestoreStream(snapshot), priority, std::move(on_result));
}

StatusOr<int> Scheduler::AddLane(StatusOr<int> stream, Priority priority, ResultFn on_result) {
  if (!stream.ok()) return stream;
  std::lock_guard<std::mutex> lock(mu_);
  Lane& lane = lanes_[*stream];
  lane.priority = priority;
  lane.on_result = std::move(on_result);
  lane.opened = Clock::now();
  return stream;
}

void Scheduler::Submit(int stream, std::vector<float> values) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = lanes_.find(stream);
    SSM_CHECK_MSG(it != lanes_.end(), fmt::format("Submit to stream {} which is not open", stream));
    Lane& lane = it->second;
    if (lane.queue.empty()) ++ready_;
    lane.submitted_s += double(values.size()) / values_per_second_;
    lane.queue.push_back({std::move(values), Clock::now(), lane.submitted_s});
    // Under mu_, so the worker's decrements follow it.
    if (metrics_ != nullptr) metrics_->queue_depth->Increment();
    wake = waiting_ == Waiting::kForWork || (waiting_ == Waiting::kForBatch && BatchComplete());
  }
  if (wake) work_cv_.notify_one();
}

void Scheduler::Close(int stream, ClosedFn on_closed, SnapshotFn on_snapshot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_.push_back({stream, std::move(on_closed), std::move(on_snapshot)});
  }
  work_cv_.notify_one();
}

void Scheduler::Snapshot(int stream, SnapshotFn on_snapshot) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshots_.emplace_back(stream, std::move(on_snapshot));
  }
  work_cv_.notify_one();
}

void Scheduler::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && !worker_.joinable()) return;
    stop_ = true;
  }
  work_cv_.notify_one();
  if (worker_.joinable()) worker_.join();
}

bool Scheduler::BatchComplete() const {
  return ready_ >= options_.max_batch_streams || size_t(ready_) >= lanes_.size();
}

Scheduler::Clock::time_point Scheduler::OldestReadyArrival() const {
  Clock::time_point oldest = Clock::time_point::max();
  for (const auto& [id, lane] : lanes_)
    if (!lane.queue.empty()) oldest = std::min(oldest, lane.queue.front().arrival);
  return oldest;
}

bool Scheduler::AheadOfRealTime(const Lane& lane, double signal_end_s,
                                Clock::time_point now) const {
  const double wall_s = std::chrono::duration<double>(now - lane.opened).count();
  const double lead_s = std::chrono::duration<double>(options_.realtime_lead).count();
  return signal_end_s > wall_s * (1 + kClientClockTolerance) + lead_s;
}

double Scheduler::BackgroundFrameBudget(bool realtime_open) const {
  const double budget = double(options_.file_frames_per_step);
  if (!realtime_open || cost_frames_ <= 0 || cost_s_ <= 0) return budget;
  const double frame_s = cost_s_ / cost_frames_;
  return std::min(budget,
                  std::chrono::duration<double>(options_.background_step_time).count() / frame_s);
}

// Policy: at most one chunk per lane per step, in two classes. A stream's own chunks keep their
// order, and batching never changes outputs, so the policy only decides when chunks run.
// - On time: real-time chunks ending within realtime_lead of real time (by the wall time since
//   their stream opened, with kClientClockTolerance), oldest first, up to max_batch_streams.
// - Background: file segments, and real-time chunks ahead of real time (a client sending faster
//   than real time), round robin over lanes, up to a frames budget: file_frames_per_step and,
//   while a stream that keeps to real time is open, what fits in background_step_time. Frames,
//   not chunks, bound what they add to a step: a real-time chunk waits for at most about
//   background_step_time of background work in the step before it and in its own. At least one
//   background chunk per step, and one batch place is kept for it, so they never starve.
// While on-time chunks remain queued after this step's (a backlog, after a long step or a burst),
// background chunks wait for it to clear, up to kMaxBackgroundDeferral, so that real-time streams
// catch up in short steps instead of falling further behind.
void Scheduler::PickBatch(std::vector<BatchItem>* batch) {
  const Clock::time_point now = Clock::now();
  std::vector<int> on_time, background;
  bool realtime_open = false;  // a real-time stream that keeps to real time
  bool backlog = false;        // an on-time lane with a second on-time chunk
  for (const auto& [id, lane] : lanes_) {
    const bool real_time = lane.priority == Priority::kRealTime;
    realtime_open |= real_time && !AheadOfRealTime(lane, lane.submitted_s, now);
    if (lane.queue.empty()) continue;
    if (!real_time || AheadOfRealTime(lane, lane.queue.front().signal_end_s, now)) {
      background.push_back(id);
      continue;
    }
    on_time.push_back(id);
    backlog |= lane.queue.size() > 1 && !AheadOfRealTime(lane, lane.queue[1].signal_end_s, now);
  }
  std::sort(on_time.begin(), on_time.end(), [this](int a, int b) {
    return lanes_[a].queue.front().arrival < lanes_[b].queue.front().arrival;
  });
  const size_t max_streams = size_t(options_.max_batch_streams);
  // One place is kept for the background; with --max-batch-streams 1 the only place is the
  // background's once it has waited kMaxBackgroundDeferral, so it never starves either.
  const size_t places_beside_background = max_streams - 1;
  backlog |= on_time.size() > places_beside_background;
  bool serve_background = !background.empty();
  if (serve_background && backlog) {
    if (background_deferred_since_ == Clock::time_point::max()) background_deferred_since_ = now;
    serve_background = now - background_deferred_since_ >= kMaxBackgroundDeferral;
  }
  if (serve_background || background.empty()) background_deferred_since_ = Clock::time_point::max();
  on_time.resize(
      std::min(on_time.size(), serve_background ? places_beside_background : max_streams));
  std::vector<int> chosen = on_time;
  if (serve_background) {
    // Round-robin order: lanes after the last one served first.
    std::stable_partition(background.begin(), background.end(),
                          [this](int id) { return id > last_background_stream_; });
    const double budget = BackgroundFrameBudget(realtime_open);
    double frames = 0;
    for (int id : background) {
      if (chosen.size() >= max_streams) break;
      const double chunk_frames =
          double(lanes_[id].queue.front().values.size()) / values_per_frame_;
      if (frames > 0 && frames + chunk_frames > budget) break;
      frames += chunk_frames;
      chosen.push_back(id);
      last_background_stream_ = id;
    }
  }
  for (int id : chosen) {
    Lane& lane = lanes_[id];
    batch->push_back({id, std::move(lane.queue.front()), &lane.on_result});
    lane.queue.pop_front();
    if (lane.queue.empty()) --ready_;
  }
  if (metrics_ != nullptr) metrics_->queue_depth->Decrement(double(chosen.size()));
}

void Scheduler::Run() {
  std::vector<BatchItem> batch;
  std::vector<Closing> closes;
  std::vector<std::pair<int, SnapshotFn>> snapshots;
  for (;;) {
    batch.clear();
    closes.clear();
    snapshots.clear();
    {
      std::unique_lock<std::mutex> lock(mu_);
      waiting_ = Waiting::kForWork;
      work_cv_.wait(
          lock, [this] { return stop_ || !closing_.empty() || !snapshots_.empty() || ready_ > 0; });
      // Bounded wait for the batch to fill, counted from the oldest ready chunk's arrival.
      if (!stop_ && closing_.empty() && ready_ > 0 && !BatchComplete() &&
          options_.batch_wait.count() > 0) {
        waiting_ = Waiting::kForBatch;
        const Clock::time_point deadline = OldestReadyArrival() + options_.batch_wait;
        work_cv_.wait_until(lock, deadline,
                            [this] { return stop_ || !closing_.empty() || BatchComplete(); });
      }
      waiting_ = Waiting::kNo;
      closes.swap(closing_);
      snapshots.swap(snapshots_);
      for (const Closing& close : closes) {
        auto it = lanes_.find(close.stream);
        if (it == lanes_.end()) continue;
        if (!it->second.queue.empty()) --ready_;
        if (metrics_ != nullptr) metrics_->queue_depth->Decrement(double(it->second.queue.size()));
        lanes_.erase(it);
      }
      if (!stop_) PickBatch(&batch);
    }
    // Snapshots first: a stream's owner asks for its close only after its snapshot arrived.
    for (auto& [stream, on_snapshot] : snapshots) on_snapshot(engine_->SnapshotStream(stream));
    // Closing outside the lock: the lanes are gone, so no step can use these streams.
    for (Closing& close : closes) CloseNow(close);
    if (!batch.empty()) DeliverResults(&batch);
    if (batch.empty() && closes.empty() && snapshots.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) break;
    }
  }
  // Stop: snapshots and closes requested after the last pass (their callbacks may request
  // more), without the lock, as above; then the streams whose owner never closed them.
  for (;;) {
    std::vector<std::pair<Closing, bool>> last_closes;  // with whether its lane was open
    {
      std::lock_guard<std::mutex> lock(mu_);
      snapshots.clear();
      snapshots.swap(snapshots_);
      for (Closing& close : closing_) {
        const bool open = lanes_.erase(close.stream) > 0;
        last_closes.emplace_back(std::move(close), open);
      }
      closing_.clear();
      if (snapshots.empty() && last_closes.empty()) break;
    }
    for (auto& [stream, on_snapshot] : snapshots) on_snapshot(engine_->SnapshotStream(stream));
    for (auto& [close, open] : last_closes) {
      if (open) {
        CloseNow(close);
      } else if (close.on_closed) {
        close.on_closed();
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [stream, lane] : lanes_) engine_->CloseStream(stream);
  lanes_.clear();
  ready_ = 0;
  if (metrics_ != nullptr) metrics_->queue_depth->Set(0);
}

void Scheduler::CloseNow(Closing& close) {
  if (close.on_snapshot) close.on_snapshot(engine_->SnapshotStream(close.stream));
  engine_->CloseStream(close.stream);
  if (close.on_closed) close.on_closed();
}

void Scheduler::DeliverResults(std::vector<BatchItem>* batch) {
  std::vector<ChunkInput> inputs;
  inputs.reserve(batch->size());
  for (const BatchItem& item : *batch)
    inputs.push_back({item.stream, item.chunk.values.data(), item.chunk.values.size()});
  const double cpu_start = metrics_ != nullptr ? ThreadCpuSeconds() : 0;
  const Clock::time_point start = Clock::now();
  engine_->Step(inputs, &step_);
  const double step_s = std::chrono::duration<double>(Clock::now() - start).count();
  if (metrics_ != nullptr) metrics_->engine_cpu->Increment(ThreadCpuSeconds() - cpu_start);
  RecordStepCost(*batch, step_s);
  RecordStep(*batch, step_s);
  const size_t d_out = size_t(engine_->d_out());
  for (size_t i = 0; i < batch->size(); ++i) {
    const ChunkOutput& out = step_.chunks[i];
    ChunkResult result;
    result.status = out.status;
    if (out.status.ok()) {
      result.first_frame = out.first_frame;
      result.frames = out.frames;
      const auto first = step_.outputs.begin() + out.offset;
      result.outputs.assign(first, first + size_t(out.frames) * d_out);
    }
    (*(*batch)[i].on_result)(std::move(result));
  }
}

void Scheduler::RecordStepCost(const std::vector<BatchItem>& batch, double step_s) {
  double frames = 0;
  for (const BatchItem& item : batch) frames += double(item.chunk.values.size());
  frames /= values_per_frame_;
  if (frames <= 0) return;
  cost_s_ = kStepCostDecay * cost_s_ + step_s;
  cost_frames_ = kStepCostDecay * cost_frames_ + frames;
}

void Scheduler::RecordStep(const std::vector<BatchItem>& batch, double step_s) {
  if (metrics_ == nullptr) return;  // metrics off
  int frames = 0;
  double values = 0;
  for (size_t i = 0; i < batch.size(); ++i) {
    frames += step_.chunks[i].frames;
    if (step_.chunks[i].status.ok()) values += double(batch[i].chunk.values.size());
  }
  metrics_->StepRun(step_s, int(batch.size()), frames);
  window_signal_s_ += values / values_per_frame_ / frame_rate_;
  window_step_s_ += step_s;
  const Clock::time_point now = Clock::now();
  if (now - window_start_ >= kRealtimeFactorWindow) {
    if (window_step_s_ > 0) metrics_->realtime_factor->Set(window_signal_s_ / window_step_s_);
    window_start_ = now;
    window_signal_s_ = window_step_s_ = 0;
  }
}

}  // namespace ssm
