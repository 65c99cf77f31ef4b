// The server's Prometheus metrics (names `ssm_*`, base units: seconds, bytes). Metrics owns the
// registry and every family; the hot paths (scheduler worker, call reactors) hold typed handles
// (ModelMetrics) and update them lock-free (counters, gauges) or under prometheus-cpp's own
// per-histogram lock. A Metrics made with `enabled` false (--metrics-listen "") registers the
// families but hands out no ModelMetrics: the hot paths then skip every update.
//
// What is counted where:
// - Stream (real-time) calls only: ssm_chunks_total, ssm_frames_total (output frames),
//   ssm_chunk_latency_seconds (chunk arrival -> its response queued for gRPC, the same interval
//   as StreamOutput.server_latency_ms), ssm_stream_lag_seconds.
// - ProcessFile calls only: ssm_offline_files_total, ssm_offline_frames_total,
//   ssm_offline_file_seconds (open -> final OK status; only successful files).
// - Both: streams opened/active/closed, state slots, errors, and every engine step (the step
//   histograms, ssm_queue_depth, ssm_realtime_factor, ssm_engine_cpu_seconds_total).
// - Server-wide: ssm_worker_pool_cpu_seconds_total and ssm_worker_pool_idle_spin_seconds_total,
//   the worker pool's threads, which run only engine work (read at each scrape). With
//   ssm_engine_cpu_seconds_total they are the engine's CPU; the process's CPU beyond it is the
//   host path (gRPC, reactors, scheduler), docs/design.md §4.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"

namespace ssm {

// Why a stream (an opened Stream or ProcessFile call) ended: the `reason` label. completed: the
// client half-closed and got every answer (OK); cancelled: the client cancelled or went away;
// idle_timeout: no input for --idle-timeout; write_timeout: the client took no response for
// --write-timeout; drained: the server shut down; error: any other failure (bad input, an
// engine error), whose code ssm_errors_total counts.
enum class CloseReason { kCompleted, kCancelled, kIdleTimeout, kWriteTimeout, kError, kDrained };
constexpr int kCloseReasons = 6;

// The `reason` label value.
const char* CloseReasonName(CloseReason reason);

// Handles to one model's series. Owned by Metrics; valid as long as it lives. Thread-safe.
struct ModelMetrics {
  prometheus::Gauge* streams_active;
  prometheus::Counter* streams_opened;
  std::array<prometheus::Counter*, kCloseReasons> streams_closed;  // by CloseReason
  prometheus::Gauge* slots_used;
  prometheus::Gauge* slots_free;
  prometheus::Counter* chunks;
  prometheus::Counter* frames;
  prometheus::Histogram* chunk_latency;  // seconds
  prometheus::Histogram* engine_step;    // seconds per Engine::Step
  prometheus::Counter* engine_cpu;       // CPU seconds of the scheduler's thread in Engine::Step
  prometheus::Histogram* batch_streams;  // chunks per step
  prometheus::Histogram* batch_frames;   // output frames per step
  prometheus::Gauge* queue_depth;        // chunks submitted and not yet in a step
  prometheus::Histogram* stream_lag;     // seconds
  prometheus::Gauge* realtime_factor;    // see Metrics::AddModel
  prometheus::Counter* offline_files;
  prometheus::Counter* offline_frames;
  prometheus::Histogram* offline_file_seconds;

  // A call opened its stream (took a state slot), or closed it for `reason` after its slot was
  // freed.
  void StreamOpened();
  void StreamClosed(CloseReason reason);
  // A Stream chunk was answered: `frames` outputs, `latency_s` after it arrived, its stream
  // `lag_s` behind real time.
  void ChunkAnswered(double latency_s, int frames, double lag_s);
  // An engine step ran `streams` chunks and file segments giving `frames` outputs in `step_s`.
  void StepRun(double step_s, int streams, int frames);
};

// Why a resume was refused: the `reason` label of ssm_resume_failures_total.
enum class ResumeFailure {
  kUnknownToken,   // no such token
  kUsedToken,      // already resumed (tokens are single use)
  kExpired,        // parked longer than --resume-ttl
  kEnded,          // the stream had ended for good, or was not kept
  kAttached,       // still attached to its old call (UNAVAILABLE: the client retries)
  kOtherModel,     // open.model names another model
  kFrames,         // resume_from_frame outside the frames the server holds
  kCorrupt,        // the snapshot does not decode or does not fit the model
  kNoSlot,         // no free state slot
  kDisabled,       // --resume-ttl 0
  kStore,          // the state store could not be read (UNAVAILABLE: the client retries)
  kCompleted,      // the stream had completed (its client may have lost the final status)
  kOtherIdentity,  // the token names a stream of another identity (--auth-keys)
};
constexpr int kResumeFailures = 13;
const char* ResumeFailureName(ResumeFailure failure);

// Server-wide series of parked streams and resumes (docs/design.md §7). Thread-safe.
struct ResumeMetrics {
  prometheus::Gauge* parked;           // streams parked now
  prometheus::Gauge* parked_bytes;     // their snapshot bytes
  prometheus::Counter* parks_kept;     // calls that broke and whose stream was parked
  prometheus::Counter* parks_refused;  // ... and whose stream could not be
  prometheus::Counter* expired;        // parked streams dropped at --resume-ttl
  prometheus::Counter* resumes;        // from memory
  prometheus::Counter* resumes_store;  // from the state store
  std::array<prometheus::Counter*, kResumeFailures> failures;
  prometheus::Counter* snapshots;
  prometheus::Counter* snapshot_bytes;
  prometheus::Histogram* snapshot_seconds;  // take + encode, on the scheduler's worker
  // The state store: operations (put, take, delete) by result (ok, error), their duration.
  std::array<std::array<prometheus::Counter*, 2>, 3> store_ops;
  prometheus::Histogram* store_seconds;
  prometheus::Counter* handoffs_saved;   // drained streams whose snapshot reached the store
  prometheus::Counter* handoffs_failed;  // ... and those whose snapshot did not
  prometheus::Counter* checkpoints;      // checkpoints written to the store
  prometheus::Counter* checkpoint_bytes;
  prometheus::Counter* checkpoint_failures;
};

class Metrics {
 public:
  // Registers the server-wide families and ssm_build_info{version,backend,device} = 1. When
  // `enabled` is false nothing is counted: AddModel returns nullptr and CountError does nothing.
  Metrics(const std::string& version, const std::string& backend, const std::string& device,
          bool enabled = true);

  bool enabled() const { return enabled_; }

  // Registers the series of one model: `capacity` state slots of `state_bytes_per_stream` bytes
  // on `backend`. ssm_realtime_factor{model} is the engine's speed: signal seconds advanced per
  // second spent in Engine::Step, over the steps of the last >= 1 s window (50 = 50x faster
  // than real time at the current batch mix); it keeps its last value while the engine is idle.
  // Not thread-safe: call while starting, before any call is served. nullptr when disabled.
  ModelMetrics* AddModel(const std::string& model, const std::string& backend, int capacity,
                         int64_t state_bytes_per_stream);

  // A call (any rpc) ended with `code`; OK is not counted, an unknown code counts as UNKNOWN.
  // Thread-safe.
  void CountError(int code);

  // The parked-stream series; nullptr when disabled.
  ResumeMetrics* resume() const { return resume_.get(); }

  // Brings the series read rather than counted (the worker pool's CPU) up to date; the HTTP
  // endpoint calls it before each scrape. Thread-safe.
  void Refresh();

  // What the HTTP endpoint serves.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

 private:
  const bool enabled_;
  std::shared_ptr<prometheus::Registry> registry_;
  // Families, owned by registry_.
  prometheus::Family<prometheus::Gauge>& build_info_;
  prometheus::Family<prometheus::Gauge>& streams_active_;
  prometheus::Family<prometheus::Counter>& streams_opened_;
  prometheus::Family<prometheus::Counter>& streams_closed_;
  prometheus::Family<prometheus::Gauge>& state_slots_;
  prometheus::Family<prometheus::Gauge>& state_bytes_;
  prometheus::Family<prometheus::Counter>& chunks_;
  prometheus::Family<prometheus::Counter>& frames_;
  prometheus::Family<prometheus::Histogram>& chunk_latency_;
  prometheus::Family<prometheus::Histogram>& engine_step_;
  prometheus::Family<prometheus::Counter>& engine_cpu_;
  prometheus::Family<prometheus::Histogram>& batch_streams_;
  prometheus::Family<prometheus::Histogram>& batch_frames_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Histogram>& stream_lag_;
  prometheus::Family<prometheus::Gauge>& realtime_factor_;
  prometheus::Family<prometheus::Counter>& errors_;
  prometheus::Family<prometheus::Counter>& offline_files_;
  prometheus::Family<prometheus::Counter>& offline_frames_;
  prometheus::Family<prometheus::Histogram>& offline_file_seconds_;

  static constexpr int kStatusCodes = int(StatusCode::kUnauthenticated) + 1;
  std::array<prometheus::Counter*, kStatusCodes> errors_by_code_;  // by code; [0] (OK) unused
  std::map<std::string, std::unique_ptr<ModelMetrics>> models_;
  std::unique_ptr<ResumeMetrics> resume_;
  // The worker pool's counters (nullptr when disabled) and what they were last brought up to.
  std::mutex refresh_mu_;
  prometheus::Counter* pool_cpu_ = nullptr;
  prometheus::Counter* pool_idle_spin_ = nullptr;
  double pool_cpu_s_ = 0, pool_idle_spin_s_ = 0;
};

}  // namespace ssm
