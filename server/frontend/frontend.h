// Streaming frontends (docs/design.md §2-3): turn a stream's input into model input frames of d_in
// floats, chunk by chunk, with a small per-stream carry so that any chunking gives the frames of
// the whole signal. Host code on every backend, log-mel features included (HostLogMel).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/base/log_mel_plan.h"
#include "server/model/model_config.h"

namespace ssm {

// Per-stream carry of a frontend (host memory, fixed size once created).
class FrontendState {
 public:
  virtual ~FrontendState() = default;
  virtual int64_t frames_emitted() const = 0;
};

// A stream's frontend carry as plain values, for snapshots (docs/design.md §7).
struct FrontendCarry {
  int64_t frames = 0;          // frames emitted so far
  int64_t skip = 0;            // log_mel: input samples to drop before the next frame starts
  std::vector<float> pending;  // log_mel: samples from the next frame's start (< win_length)
};

// Computes log-mel features (reference::LogMel's contract): out is (n_frames, n_mels), frame t
// reads samples[t * hop, t * hop + win). Must be safe to call concurrently.
using LogMelFn =
    std::function<void(const LogMelPlan&, const float* samples, int n_frames, float* out)>;

// The log-mel features an engine on `backend` uses, in host memory on every backend: the plain
// reference (kernels/reference/log_mel.h) for "reference", so that a reference engine stays the
// truth end to end; the FFT kernel (kernels/cpu/log_mel.h) for any other backend, on *threads
// threads (<= 0: all cores), read at each call so that the engine sets it per step. Both compute
// a frame from its samples alone.
LogMelFn HostLogMel(const std::string& backend, const int* threads);

// Immutable once created and shared by all streams of a model; the per-stream part is a
// FrontendState. Thread-compatible: distinct states may be processed concurrently.
class Frontend {
 public:
  virtual ~Frontend() = default;
  virtual int frame_dim() const = 0;        // d_in: floats per output frame
  virtual bool takes_samples() const = 0;   // true: input is mono samples; false: d_in-float frames
  virtual size_t carry_floats() const = 0;  // size of the per-stream carry, for memory accounting
  virtual std::unique_ptr<FrontendState> NewState() const = 0;
  // The carry of `state`, and a state rebuilt from one: Restore(Save(s)) continues exactly as s
  // would. INVALID_ARGUMENT naming the field for a carry this frontend cannot hold.
  virtual FrontendCarry SaveState(const FrontendState& state) const = 0;
  virtual StatusOr<std::unique_ptr<FrontendState>> RestoreState(
      const FrontendCarry& carry) const = 0;

  // How many frames Process would emit for n more input values (does not change state).
  virtual int64_t FramesFor(const FrontendState& state, size_t n) const = 0;

  // Consumes n input values (samples, or whole frames of d_in floats), appends each completed frame
  // (frame_dim floats) to *frames and returns the number appended. INVALID_ARGUMENT, with the state
  // unchanged, if n is not a whole number of frames for frame input or if a value is NaN or Inf.
  virtual StatusOr<int> Process(FrontendState* state, const float* in, size_t n,
                                std::vector<float>* frames) const = 0;
};

// The frontend of config.frontend: "log_mel" (features from log_mel) or "none" (frames, normalised
// by the optional mean/std). INVALID_ARGUMENT naming the field for a config it cannot run.
StatusOr<std::unique_ptr<Frontend>> CreateFrontend(const ModelConfig& config, LogMelFn log_mel);

}  // namespace ssm
