#include "server/service/metrics.h"

#include <algorithm>

#include "kernels/base/worker_pool.h"

namespace ssm {

namespace {

using prometheus::Histogram;

// Seconds, 0.5 ms .. 5 s: chunk latency, stream lag and engine steps.
const Histogram::BucketBoundaries& SecondsBuckets() {
  static const Histogram::BucketBoundaries buckets{0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                                                   0.1,    0.2,   0.5,   1,     2,    5};
  return buckets;
}

// Powers of two from 1 to `max`: batch sizes.
Histogram::BucketBoundaries PowersOfTwo(double max) {
  Histogram::BucketBoundaries buckets;
  for (double b = 1; b <= max; b *= 2) buckets.push_back(b);
  return buckets;
}

// Seconds, 10 ms .. 10 min: ProcessFile calls.
const Histogram::BucketBoundaries& FileSecondsBuckets() {
  static const Histogram::BucketBoundaries buckets{0.01, 0.05, 0.1, 0.5, 1,   2,  5,
                                                   10,   30,   60,  120, 300, 600};
  return buckets;
}

template <typename T>
prometheus::Family<T>& Build(prometheus::detail::Builder<T> builder, const char* name,
                             const char* help, prometheus::Registry* registry) {
  return builder.Name(name).Help(help).Register(*registry);
}

}  // namespace

const char* CloseReasonName(CloseReason reason) {
  switch (reason) {
    case CloseReason::kCompleted:
      return "completed";
    case CloseReason::kCancelled:
      return "cancelled";
    case CloseReason::kIdleTimeout:
      return "idle_timeout";
    case CloseReason::kWriteTimeout:
      return "write_timeout";
    case CloseReason::kError:
      return "error";
    case CloseReason::kDrained:
      return "drained";
  }
  return "error";
}

const char* ResumeFailureName(ResumeFailure failure) {
  switch (failure) {
    case ResumeFailure::kUnknownToken:
      return "unknown_token";
    case ResumeFailure::kUsedToken:
      return "used_token";
    case ResumeFailure::kExpired:
      return "expired";
    case ResumeFailure::kEnded:
      return "ended";
    case ResumeFailure::kAttached:
      return "still_attached";
    case ResumeFailure::kOtherModel:
      return "other_model";
    case ResumeFailure::kFrames:
      return "frames_not_held";
    case ResumeFailure::kCorrupt:
      return "corrupt";
    case ResumeFailure::kNoSlot:
      return "no_slot";
    case ResumeFailure::kDisabled:
      return "disabled";
    case ResumeFailure::kStore:
      return "store_unavailable";
    case ResumeFailure::kCompleted:
      return "completed";
    case ResumeFailure::kOtherIdentity:
      return "other_identity";
  }
  return "corrupt";
}

void ModelMetrics::StreamOpened() {
  streams_opened->Increment();
  streams_active->Increment();
  slots_used->Increment();
  slots_free->Decrement();
}

void ModelMetrics::StreamClosed(CloseReason reason) {
  streams_closed[size_t(reason)]->Increment();
  streams_active->Decrement();
  slots_used->Decrement();
  slots_free->Increment();
}

void ModelMetrics::ChunkAnswered(double latency_s, int frames_answered, double lag_s) {
  chunks->Increment();
  frames->Increment(frames_answered);
  chunk_latency->Observe(latency_s);
  stream_lag->Observe(lag_s);
}

void ModelMetrics::StepRun(double step_s, int streams, int frames_out) {
  engine_step->Observe(step_s);
  batch_streams->Observe(double(streams));
  batch_frames->Observe(double(frames_out));
}

Metrics::Metrics(const std::string& version, const std::string& backend, const std::string& device,
                 bool enabled)
    : enabled_(enabled),
      registry_(std::make_shared<prometheus::Registry>()),
      build_info_(Build(prometheus::BuildGauge(), "ssm_build_info",
                        "Always 1; the labels describe the server build", registry_.get())),
      streams_active_(Build(prometheus::BuildGauge(), "ssm_streams_active",
                            "Open streams (Stream and ProcessFile calls past `open`)",
                            registry_.get())),
      streams_opened_(Build(prometheus::BuildCounter(), "ssm_streams_opened_total",
                            "Streams opened", registry_.get())),
      streams_closed_(Build(prometheus::BuildCounter(), "ssm_streams_closed_total",
                            "Streams closed, by reason", registry_.get())),
      state_slots_(Build(prometheus::BuildGauge(), "ssm_state_slots",
                         "Stream state slots, used or free (--max-streams per model)",
                         registry_.get())),
      state_bytes_(Build(prometheus::BuildGauge(), "ssm_state_bytes_per_stream",
                         "Bytes of model state one stream holds", registry_.get())),
      chunks_(Build(prometheus::BuildCounter(), "ssm_chunks_total", "Stream chunks answered",
                    registry_.get())),
      frames_(Build(prometheus::BuildCounter(), "ssm_frames_total", "Output frames of Stream calls",
                    registry_.get())),
      chunk_latency_(Build(prometheus::BuildHistogram(), "ssm_chunk_latency_seconds",
                           "Stream chunk arrival to its response queued for gRPC",
                           registry_.get())),
      engine_step_(Build(prometheus::BuildHistogram(), "ssm_engine_step_seconds",
                         "Duration of one batched engine step", registry_.get())),
      engine_cpu_(Build(prometheus::BuildCounter(), "ssm_engine_cpu_seconds_total",
                        "CPU seconds the scheduler's thread spent in engine steps (the worker "
                        "pool's threads: ssm_worker_pool_cpu_seconds_total)",
                        registry_.get())),
      batch_streams_(Build(prometheus::BuildHistogram(), "ssm_batch_streams",
                           "Chunks (streams) per engine step", registry_.get())),
      batch_frames_(Build(prometheus::BuildHistogram(), "ssm_batch_frames",
                          "Output frames per engine step", registry_.get())),
      queue_depth_(Build(prometheus::BuildGauge(), "ssm_queue_depth",
                         "Chunks and file segments waiting for an engine step", registry_.get())),
      stream_lag_(Build(prometheus::BuildHistogram(), "ssm_stream_lag_seconds",
                        "Per Stream chunk: wall time since open minus signal time processed "
                        "(clamped at 0)",
                        registry_.get())),
      realtime_factor_(Build(prometheus::BuildGauge(), "ssm_realtime_factor",
                             "Signal seconds advanced per second of engine step time, over the "
                             "last >= 1 s of steps",
                             registry_.get())),
      errors_(Build(prometheus::BuildCounter(), "ssm_errors_total",
                    "Calls that ended with a non-OK status, by gRPC code", registry_.get())),
      offline_files_(Build(prometheus::BuildCounter(), "ssm_offline_files_total",
                           "ProcessFile calls completed", registry_.get())),
      offline_frames_(Build(prometheus::BuildCounter(), "ssm_offline_frames_total",
                            "Output frames of ProcessFile calls", registry_.get())),
      offline_file_seconds_(Build(prometheus::BuildHistogram(), "ssm_offline_file_seconds",
                                  "Duration of a completed ProcessFile call, open to status",
                                  registry_.get())) {
  build_info_.Add({{"version", version}, {"backend", backend}, {"device", device}}).Set(1);
  errors_by_code_[0] = nullptr;
  for (int code = 1; code < kStatusCodes; ++code)
    errors_by_code_[code] = &errors_.Add({{"code", StatusCodeName(StatusCode(code))}});
  if (!enabled_) return;
  prometheus::Registry* r = registry_.get();
  resume_ = std::make_unique<ResumeMetrics>();
  ResumeMetrics& m = *resume_;
  m.parked = &Build(prometheus::BuildGauge(), "ssm_streams_parked",
                    "Streams whose call broke, kept in host memory for a resume", r)
                  .Add({});
  m.parked_bytes = &Build(prometheus::BuildGauge(), "ssm_parked_state_bytes",
                          "Snapshot bytes of the parked streams", r)
                        .Add({});
  auto& parks = Build(prometheus::BuildCounter(), "ssm_stream_parks_total",
                      "Stream calls that broke, by whether their stream was kept", r);
  m.parks_kept = &parks.Add({{"outcome", "kept"}});
  m.parks_refused = &parks.Add({{"outcome", "not_kept"}});
  m.expired = &Build(prometheus::BuildCounter(), "ssm_parked_expired_total",
                     "Parked streams dropped after --resume-ttl", r)
                   .Add({});
  auto& resumes = Build(prometheus::BuildCounter(), "ssm_stream_resumes_total",
                        "Streams resumed on a new call, by where their state came from", r);
  m.resumes = &resumes.Add({{"source", "memory"}});
  m.resumes_store = &resumes.Add({{"source", "store"}});
  auto& failures = Build(prometheus::BuildCounter(), "ssm_resume_failures_total",
                         "Resume attempts refused, by reason", r);
  for (int f = 0; f < kResumeFailures; ++f)
    m.failures[size_t(f)] = &failures.Add({{"reason", ResumeFailureName(ResumeFailure(f))}});
  m.snapshots =
      &Build(prometheus::BuildCounter(), "ssm_snapshots_total", "Stream snapshots taken", r)
           .Add({});
  m.snapshot_bytes = &Build(prometheus::BuildCounter(), "ssm_snapshot_bytes_total",
                            "Bytes of the stream snapshots taken", r)
                          .Add({});
  m.snapshot_seconds = &Build(prometheus::BuildHistogram(), "ssm_snapshot_seconds",
                              "Time to take and encode one stream snapshot", r)
                            .Add({}, SecondsBuckets());
  auto& store_ops = Build(prometheus::BuildCounter(), "ssm_store_operations_total",
                          "State store operations, by operation and result", r);
  const char* const ops[] = {"put", "take", "delete"};
  for (size_t op = 0; op < 3; ++op) {
    m.store_ops[op][0] = &store_ops.Add({{"op", ops[op]}, {"result", "ok"}});
    m.store_ops[op][1] = &store_ops.Add({{"op", ops[op]}, {"result", "error"}});
  }
  m.store_seconds = &Build(prometheus::BuildHistogram(), "ssm_store_operation_seconds",
                           "Duration of one state store operation", r)
                         .Add({}, SecondsBuckets());
  auto& handoffs = Build(prometheus::BuildCounter(), "ssm_handoffs_total",
                         "Streams a draining server saved to the state store, by outcome", r);
  m.handoffs_saved = &handoffs.Add({{"outcome", "saved"}});
  m.handoffs_failed = &handoffs.Add({{"outcome", "failed"}});
  auto& checkpoints = Build(prometheus::BuildCounter(), "ssm_checkpoints_total",
                            "Stream checkpoints written to the state store, by outcome", r);
  m.checkpoints = &checkpoints.Add({{"outcome", "written"}});
  m.checkpoint_failures = &checkpoints.Add({{"outcome", "failed"}});
  m.checkpoint_bytes = &Build(prometheus::BuildCounter(), "ssm_checkpoint_bytes_total",
                              "Bytes of the stream checkpoints written", r)
                            .Add({});
  pool_cpu_ = &Build(prometheus::BuildCounter(), "ssm_worker_pool_cpu_seconds_total",
                     "CPU seconds of the worker pool's threads (engine work only; the "
                     "scheduler threads' share is ssm_engine_cpu_seconds_total)",
                     r)
                   .Add({});
  pool_idle_spin_ = &Build(prometheus::BuildCounter(), "ssm_worker_pool_idle_spin_seconds_total",
                           "Seconds the worker pool's threads spun idle for the next loop "
                           "(--worker-spin-us), part of ssm_worker_pool_cpu_seconds_total",
                           r)
                         .Add({});
}

void Metrics::Refresh() {
  if (!enabled_) return;
  const WorkerPool& pool = WorkerPool::Process();
  std::lock_guard<std::mutex> lock(refresh_mu_);
  // Each counter is raised to the pool's figure: the difference since the last scrape.
  const double cpu_s = pool.WorkerCpuSeconds(), spin_s = pool.WorkerIdleSpinSeconds();
  if (cpu_s > pool_cpu_s_) pool_cpu_->Increment(cpu_s - pool_cpu_s_);
  if (spin_s > pool_idle_spin_s_) pool_idle_spin_->Increment(spin_s - pool_idle_spin_s_);
  pool_cpu_s_ = std::max(pool_cpu_s_, cpu_s);
  pool_idle_spin_s_ = std::max(pool_idle_spin_s_, spin_s);
}

ModelMetrics* Metrics::AddModel(const std::string& model, const std::string& backend, int capacity,
                                int64_t state_bytes_per_stream) {
  if (!enabled_) return nullptr;
  auto m = std::make_unique<ModelMetrics>();
  const prometheus::Labels labels{{"model", model}};
  m->streams_active = &streams_active_.Add(labels);
  m->streams_opened = &streams_opened_.Add(labels);
  for (int r = 0; r < kCloseReasons; ++r)
    m->streams_closed[r] =
        &streams_closed_.Add({{"model", model}, {"reason", CloseReasonName(CloseReason(r))}});
  m->slots_used = &state_slots_.Add({{"model", model}, {"state", "used"}});
  m->slots_free = &state_slots_.Add({{"model", model}, {"state", "free"}});
  m->slots_free->Set(capacity);
  state_bytes_.Add(labels).Set(double(state_bytes_per_stream));
  m->chunks = &chunks_.Add(labels);
  m->frames = &frames_.Add(labels);
  m->chunk_latency = &chunk_latency_.Add(labels, SecondsBuckets());
  m->engine_step = &engine_step_.Add({{"model", model}, {"backend", backend}}, SecondsBuckets());
  m->engine_cpu = &engine_cpu_.Add(labels);
  m->batch_streams = &batch_streams_.Add(labels, PowersOfTwo(1024));
  m->batch_frames = &batch_frames_.Add(labels, PowersOfTwo(16384));
  m->queue_depth = &queue_depth_.Add(labels);
  m->stream_lag = &stream_lag_.Add(labels, SecondsBuckets());
  m->realtime_factor = &realtime_factor_.Add(labels);
  m->offline_files = &offline_files_.Add(labels);
  m->offline_frames = &offline_frames_.Add(labels);
  m->offline_file_seconds = &offline_file_seconds_.Add(labels, FileSecondsBuckets());
  ModelMetrics* handle = m.get();
  models_[model] = std::move(m);
  return handle;
}

void Metrics::CountError(int code) {
  if (!enabled_ || code == 0) return;
  if (code < 0 || code >= kStatusCodes) code = int(StatusCode::kUnknown);
  errors_by_code_[size_t(code)]->Increment();
}

}  // namespace ssm
