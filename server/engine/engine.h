// The engine: one model on one backend, a fixed pool of stream states, and the batched step
// that advances many streams' chunks in one pass (docs/design.md §4).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/backend.h"
#include "server/engine/input_source.h"
#include "server/engine/snapshot.h"
#include "server/engine/state_pool.h"
#include "server/frontend/frontend.h"
#include "server/layers/layer.h"
#include "server/model/model.h"

namespace ssm {

struct EngineOptions {
  std::string backend = "cpu";  // "reference" | "cpu" | "cuda" (see ResolveDevice for "auto")
  int threads = 0;              // compute threads; 0 = one per core it may run on
  int max_streams = 256;        // state pool slots, allocated at start
  int max_batch_frames = 2048;  // frames per engine pass; bounds scratch memory
  // A step whose estimated work is below this many MFLOP runs on one thread (docs/design.md §4);
  // 0: every step on all threads.
  double parallel_min_mflop = 200;

  Status Validate() const;
};

// One stream's new input: samples (log_mel models) or whole frames of d_in floats.
struct ChunkInput {
  int stream = -1;
  const float* data = nullptr;
  size_t count = 0;  // values
};

struct ChunkOutput {
  // A bad chunk fails alone and leaves its stream's state untouched, with one exception: a chunk
  // whose outputs are not all finite (the weights or the input overflow float32) fails with
  // INTERNAL after its stream's state has advanced, and the stream refuses every later chunk.
  Status status;
  int64_t first_frame = 0;  // stream-wide index of the first output frame
  int frames = 0;           // output frames produced by this chunk
  size_t offset = 0;        // index of its first output float in StepResult::outputs
};

struct StepResult {
  std::vector<ChunkOutput> chunks;  // one per input chunk, same order
  std::vector<float> outputs;       // (sum of frames, d_out)
};

struct OfflineOptions {
  int segment_frames = 1024;  // frames read per input per pass: memory is bounded by this
  // false: the recurrence that streaming runs, so outputs equal a streamed run's bitwise. true:
  // layers take their parallel form where they have one and the backend its kernel (Mamba-2's
  // chunked SSD form), equal to a streamed run's outputs to the exactness contract's bound. On
  // the cpu backend the recurrence is the faster (tests/bench/RESULTS.md), hence the default.
  bool parallel_form = false;
  // Called after each pass with frames done so far per input (optional).
  std::function<void(const std::vector<int64_t>& frames_done)> progress;
};

class Engine {
 public:
  static StatusOr<std::unique_ptr<Engine>> Create(std::shared_ptr<const Model> model,
                                                  const EngineOptions& options);
  ~Engine();

  const Model& model() const { return *model_; }
  const Frontend& frontend() const { return *frontend_; }
  const EngineOptions& options() const { return options_; }
  Backend& backend() { return *backend_; }
  int d_out() const { return model_->config().d_out; }

  // Opens a stream with zero state; returns its id (its slot). Thread-safe.
  StatusOr<int> OpenStream();
  // Frees the stream's slot at once. Thread-safe; must not race with a Step using the stream.
  void CloseStream(int stream);
  int streams_open() const { return pool_->used(); }
  int capacity() const { return pool_->capacity(); }
  int64_t frames_emitted(int stream) const;

  // The stream's state as a snapshot (docs/design.md §7): the model's fingerprint, this backend,
  // the frontend carry and every layer's state; the caller fills in next_sequence and the held
  // outputs. FAILED_PRECONDITION for a stream that is not open or produced a non-finite output.
  // Must not race with a Step using the stream (the scheduler calls it on its worker).
  StatusOr<StreamSnapshot> SnapshotStream(int stream) const;
  // Opens a stream that continues from `snapshot` and returns its id. FAILED_PRECONDITION
  // naming both fingerprints for another model's snapshot, and for another precision;
  // DATA_LOSS for a snapshot whose layers or frontend carry do not fit this model. The
  // snapshot may come from another backend (its states have the same layout on every
  // backend). Thread-safe like OpenStream: it writes only the new stream's own slot.
  StatusOr<int> RestoreStream(const StreamSnapshot& snapshot);

  // Advances each chunk's stream by its input (at most one chunk per stream). The outputs of a
  // stream are the same, bitwise, whatever else is in the batch and however its input is
  // chunked; a chunk with a non-finite output fails (see ChunkOutput), so none is ever returned.
  // Not thread-safe: one caller at a time (the scheduler).
  void Step(const std::vector<ChunkInput>& chunks, StepResult* result);
  // The estimated work of a step on `chunks` (their frames x the model's FLOPs per frame, plus
  // the log-mel's FFT), MFLOP; below EngineOptions::parallel_min_mflop it runs on one thread.
  // Reads only the chunks' counts.
  double StepMflop(const std::vector<ChunkInput>& chunks) const;

  // Whole inputs through the model, segment by segment with carried state, many inputs per
  // pass. Returns each input's outputs, (frames, d_out). Needs free stream slots. See
  // OfflineOptions::parallel_form for how they compare with a streamed run's.
  StatusOr<std::vector<std::vector<float>>> RunOffline(const std::vector<InputSource*>& inputs,
                                                       const OfflineOptions& options);

 private:
  Engine() = default;
  // Step, for live chunks or (offline) for segments of whole inputs (SeqBatch::offline).
  void StepImpl(const std::vector<ChunkInput>& chunks, bool offline, StepResult* result);
  // Runs the network on `batch` rows of host features; writes (rows, d_out) host outputs.
  void RunPass(const SeqBatch& batch, const float* features, float* outputs);
  // One thread for a step of little work, all of them otherwise: for the backend's ops and the
  // frontend's log-mel.
  void SetStepThreads(const std::vector<ChunkInput>& chunks);

  std::shared_ptr<const Model> model_;
  EngineOptions options_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Frontend> frontend_;
  int frontend_threads_ = 0;             // the log-mel's threads in the current step (HostLogMel)
  double frontend_flops_per_frame_ = 0;  // an estimate, for SetStepThreads
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<StatePool> pool_;
  // What the engine keeps of one stream besides its recurrent state in the pool: the frontend
  // carry (null while the slot is free) and whether it produced a non-finite output (char, not
  // bool: OpenStream writes its own slot from any thread, so flags must not share bytes).
  struct StreamSlot {
    std::unique_ptr<FrontendState> frontend;
    char non_finite = 0;
  };
  std::vector<StreamSlot> slots_;  // by slot

  // Weights outside the layers.
  std::unique_ptr<LinearWeights> input_proj_, head_;
  std::unique_ptr<Buffer> norm_f_w_;  // (d_model)
  Activation activation_ = Activation::kNone;

  // Per-pass workspace in backend memory, max_batch_frames rows each.
  std::unique_ptr<Buffer> in_, h_, hn_, y_, scratch_;
  // Host staging of one Step.
  std::vector<float> features_;
};

}  // namespace ssm
