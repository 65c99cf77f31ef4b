#include "server/service/scheduler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>

namespace ssm {

namespace {

// ssm_realtime_factor is recomputed once this much wall time has passed with steps in it.
constexpr std::chrono::seconds kRealtimeFactorWindow(1);

}  // namespace

Scheduler::Scheduler(Engine* engine, const SchedulerOptions& options, ModelMetrics* metrics)
    : engine_(engine),
      options_(options),
      values_per_frame_(engine->frontend().takes_samples()
                            ? double(engine->model().config().frontend.hop_length)
                            : double(engine->model().config().d_in)),
      frame_rate_(engine->model().config().frame_rate()),
      metrics_(metrics),
      window_start_(Clock::now()),
      worker_([this] { Run(); }) {}

Scheduler::~Scheduler() { Stop(); }

StatusOr<int> Scheduler::Open(Priority priority, ResultFn on_result) {
  SSM_ASSIGN_OR_RETURN(int stream, engine_->OpenStream());  // thread-safe
  std::lock_guard<std::mutex> lock(mu_);
  Lane& lane = lanes_[stream];
  lane.priority = priority;
  lane.on_result = std::move(on_result);
  return stream;
}

void Scheduler::Submit(int stream, std::vector<float> values) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = lanes_.find(stream);
    SSM_CHECK_MSG(it != lanes_.end(), fmt::format("Submit to stream {} which is not open", stream));
    if (it->second.queue.empty()) ++ready_;
    it->second.queue.push_back({std::move(values), Clock::now()});
    // Under mu_, so the worker's decrements follow it.
    if (metrics_ != nullptr) metrics_->queue_depth->Increment();
  }
  work_cv_.notify_one();
}

void Scheduler::Close(int stream, ClosedFn on_closed) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closing_.emplace_back(stream, std::move(on_closed));
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

Scheduler::Clock::time_point Scheduler::OldestReadyArrival() const {
  Clock::time_point oldest = Clock::time_point::max();
  for (const auto& [id, lane] : lanes_)
    if (!lane.queue.empty()) oldest = std::min(oldest, lane.queue.front().arrival);
  return oldest;
}

// Policy: real-time chunks first, oldest first, up to max_batch_streams; then file segments, round
// robin over files, up to file_frames_per_step frames. When files are waiting, one batch place is
// kept for them so they never starve; real-time chunks left out are the oldest next time.
void Scheduler::PickBatch(std::vector<BatchItem>* batch) {
  std::vector<int> real_time, files;
  for (const auto& [id, lane] : lanes_) {
    if (lane.queue.empty()) continue;
    (lane.priority == Priority::kRealTime ? real_time : files).push_back(id);
  }
  std::sort(real_time.begin(), real_time.end(), [this](int a, int b) {
    return lanes_[a].queue.front().arrival < lanes_[b].queue.front().arrival;
  });
  const size_t max_streams = size_t(options_.max_batch_streams);
  // With --max-batch-streams 1 real-time chunks take the only place.
  const size_t real_time_places =
      files.empty() ? max_streams : std::max<size_t>(max_streams, 2) - 1;
  real_time.resize(std::min(real_time.size(), real_time_places));
  // Files in round-robin order: those after the last one served first.
  std::stable_partition(files.begin(), files.end(),
                        [this](int id) { return id > last_file_stream_; });
  std::vector<int> chosen = real_time;
  double file_frames = 0;
  for (int id : files) {
    if (chosen.size() >= max_streams) break;
    const double frames = double(lanes_[id].queue.front().values.size()) / values_per_frame_;
    if (file_frames > 0 && file_frames + frames > options_.file_frames_per_step) break;
    file_frames += frames;
    chosen.push_back(id);
    last_file_stream_ = id;
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
  std::vector<std::pair<int, ClosedFn>> closes;
  for (;;) {
    batch.clear();
    closes.clear();
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stop_ || !closing_.empty() || ready_ > 0; });
      // Bounded wait for the batch to fill, counted from the oldest ready chunk's arrival.
      if (!stop_ && closing_.empty() && ready_ > 0 && ready_ < options_.max_batch_streams &&
          options_.batch_wait.count() > 0) {
        const Clock::time_point deadline = OldestReadyArrival() + options_.batch_wait;
        work_cv_.wait_until(lock, deadline, [this] {
          return stop_ || !closing_.empty() || ready_ >= options_.max_batch_streams;
        });
      }
      closes.swap(closing_);
      for (const auto& close : closes) {
        auto it = lanes_.find(close.first);
        if (it == lanes_.end()) continue;
        if (!it->second.queue.empty()) --ready_;
        if (metrics_ != nullptr) metrics_->queue_depth->Decrement(double(it->second.queue.size()));
        lanes_.erase(it);
      }
      if (!stop_) PickBatch(&batch);
    }
    // Closing outside the lock: the lanes are gone, so no step can use these streams.
    for (auto& [stream, on_closed] : closes) {
      engine_->CloseStream(stream);
      if (on_closed) on_closed();
    }
    if (!batch.empty()) DeliverResults(&batch);
    if (batch.empty() && closes.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) break;
    }
  }
  // Stop: a close requested after the last pass, then streams whose owner never closed them.
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [stream, on_closed] : closing_) {
    if (lanes_.erase(stream) > 0) engine_->CloseStream(stream);
    if (on_closed) on_closed();
  }
  closing_.clear();
  for (const auto& [stream, lane] : lanes_) engine_->CloseStream(stream);
  lanes_.clear();
  ready_ = 0;
  if (metrics_ != nullptr) metrics_->queue_depth->Set(0);
}

void Scheduler::DeliverResults(std::vector<BatchItem>* batch) {
  std::vector<ChunkInput> inputs;
  inputs.reserve(batch->size());
  for (const BatchItem& item : *batch)
    inputs.push_back({item.stream, item.chunk.values.data(), item.chunk.values.size()});
  const Clock::time_point start = Clock::now();
  engine_->Step(inputs, &step_);
  RecordStep(*batch, std::chrono::duration<double>(Clock::now() - start).count());
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
