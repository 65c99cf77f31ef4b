#include "server/frontend/frontend.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <utility>

#include "kernels/cpu/log_mel.h"
#include "kernels/reference/log_mel.h"

namespace ssm {
namespace {

// INVALID_ARGUMENT naming the first NaN or Inf among n input values.
Status CheckFinite(const float* in, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(in[i])) {
      return InvalidArgumentError(fmt::format(
          "input value {} of {} is {}: samples and frames must be finite", i, n, in[i]));
    }
  }
  return OkStatus();
}

// Process returns an int: refuse a chunk that would emit more frames (never seen in practice).
Status CheckFrameCount(int64_t count, size_t n) {
  if (count <= INT_MAX) return OkStatus();
  return InvalidArgumentError(
      fmt::format("a chunk of {} values gives {} frames, more than {}; send smaller chunks", n,
                  count, INT_MAX));
}

Status CheckCarryFrames(const FrontendCarry& carry) {
  if (carry.frames >= 0) return OkStatus();
  return InvalidArgumentError(
      fmt::format("frontend carry: {} frames emitted; expected >= 0", carry.frames));
}

// The concrete state of a frontend (T may be const); another frontend's state is a bug.
template <typename T, typename Base>
T* StateCast(Base* state) {
  T* s = dynamic_cast<T*>(state);
  SSM_CHECK_MSG(s != nullptr, "frontend state made by another frontend");
  return s;
}

// ---- log_mel: mono samples -> log-mel frames --------------------------------------------------

class LogMelState final : public FrontendState {
 public:
  explicit LogMelState(int win_length) { pending.reserve(win_length); }
  int64_t frames_emitted() const override { return frames; }

  // Samples from the next frame's first sample on; fewer than win_length, so never reallocated.
  std::vector<float> pending;
  // Samples still to drop before the next frame starts (only when hop_length > win_length).
  int64_t skip = 0;
  int64_t frames = 0;
};

// Frame t covers samples [t * hop, t * hop + win) of the stream and is emitted once its last
// sample has arrived. The state keeps the samples from the next frame's start on, so every frame
// is computed from the same samples by the same call, bitwise, whatever the chunking.
class LogMelFrontend final : public Frontend {
 public:
  LogMelFrontend(const LogMelParams& params, LogMelFn log_mel)
      : plan_(LogMelPlan::Make(params)), log_mel_(std::move(log_mel)) {}

  int frame_dim() const override { return plan_.params.n_mels; }
  bool takes_samples() const override { return true; }
  size_t carry_floats() const override { return plan_.params.win_length; }
  std::unique_ptr<FrontendState> NewState() const override {
    return std::make_unique<LogMelState>(plan_.params.win_length);
  }

  FrontendCarry SaveState(const FrontendState& base) const override {
    const LogMelState& state = *StateCast<const LogMelState>(&base);
    return {state.frames, state.skip, state.pending};
  }

  StatusOr<std::unique_ptr<FrontendState>> RestoreState(const FrontendCarry& carry) const override {
    const int64_t win = plan_.params.win_length, hop = plan_.params.hop_length;
    SSM_RETURN_IF_ERROR(CheckCarryFrames(carry));
    if (carry.pending.size() >= size_t(win))
      return InvalidArgumentError(fmt::format(
          "frontend carry: {} pending samples, but a log_mel frontend with win_length {} keeps "
          "fewer",
          carry.pending.size(), win));
    const int64_t max_skip = std::max<int64_t>(0, hop - win);
    if (carry.skip < 0 || carry.skip > max_skip || (carry.skip > 0 && !carry.pending.empty()))
      return InvalidArgumentError(fmt::format(
          "frontend carry: skip {} with {} pending samples is not a state of a log_mel frontend "
          "with hop_length {} and win_length {}",
          carry.skip, carry.pending.size(), hop, win));
    SSM_RETURN_IF_ERROR(
        CheckFinite(carry.pending.data(), carry.pending.size()).WithContext("frontend carry"));
    auto state = std::make_unique<LogMelState>(plan_.params.win_length);
    state->frames = carry.frames;
    state->skip = carry.skip;
    state->pending = carry.pending;
    return std::unique_ptr<FrontendState>(std::move(state));
  }

  int64_t FramesFor(const FrontendState& base, size_t n) const override {
    const LogMelState& state = *StateCast<const LogMelState>(&base);
    const uint64_t kept = n > uint64_t(state.skip) ? n - state.skip : 0;  // after the skip
    const uint64_t available = state.pending.size() + kept;  // from the next frame's start
    const uint64_t win = plan_.params.win_length, hop = plan_.params.hop_length;
    return available < win ? 0 : int64_t((available - win) / hop + 1);
  }

  StatusOr<int> Process(FrontendState* base, const float* in, size_t n,
                        std::vector<float>* frames) const override {
    LogMelState& state = *StateCast<LogMelState>(base);
    SSM_RETURN_IF_ERROR(CheckFinite(in, n));
    const int64_t count = FramesFor(state, n);
    SSM_RETURN_IF_ERROR(CheckFrameCount(count, n));

    const size_t skipped = std::min<uint64_t>(state.skip, n);
    in += skipped;
    n -= skipped;
    state.skip -= skipped;
    if (count == 0) {
      state.pending.insert(state.pending.end(), in, in + n);
      return 0;
    }

    // The samples from the next frame's start as one run: pending then in (no copy without a
    // pending part, e.g. a whole file in one chunk).
    std::vector<float> scratch;
    const float* run = in;
    if (!state.pending.empty()) {
      scratch.reserve(state.pending.size() + n);
      scratch.assign(state.pending.begin(), state.pending.end());
      scratch.insert(scratch.end(), in, in + n);
      run = scratch.data();
    }
    const size_t available = state.pending.size() + n;

    const size_t old_size = frames->size();
    frames->resize(old_size + size_t(count) * plan_.params.n_mels);
    log_mel_(plan_, run, int(count), frames->data() + old_size);
    state.frames += count;

    // Keep what the next frame needs: the samples from its start, or how many to skip until it.
    const size_t next_start = size_t(count) * plan_.params.hop_length;
    if (next_start >= available) {
      state.skip = int64_t(next_start - available);
      state.pending.clear();
    } else {
      state.pending.assign(run + next_start, run + available);
    }
    return int(count);
  }

 private:
  LogMelPlan plan_;
  LogMelFn log_mel_;
};

// ---- none: frames of d_in floats, optionally normalised ----------------------------------------

class FrameState final : public FrontendState {
 public:
  int64_t frames_emitted() const override { return frames; }
  int64_t frames = 0;
};

class FrameFrontend final : public Frontend {
 public:
  FrameFrontend(int d_in, std::vector<float> mean, std::vector<float> std)
      : d_in_(d_in), mean_(std::move(mean)), std_(std::move(std)) {}

  int frame_dim() const override { return d_in_; }
  bool takes_samples() const override { return false; }
  size_t carry_floats() const override { return 0; }
  std::unique_ptr<FrontendState> NewState() const override {
    return std::make_unique<FrameState>();
  }
  FrontendCarry SaveState(const FrontendState& base) const override {
    return {StateCast<const FrameState>(&base)->frames, 0, {}};
  }

  StatusOr<std::unique_ptr<FrontendState>> RestoreState(const FrontendCarry& carry) const override {
    SSM_RETURN_IF_ERROR(CheckCarryFrames(carry));
    if (carry.skip != 0 || !carry.pending.empty())
      return InvalidArgumentError(fmt::format(
          "frontend carry: skip {} and {} pending samples, but a frame frontend carries none",
          carry.skip, carry.pending.size()));
    auto state = std::make_unique<FrameState>();
    state->frames = carry.frames;
    return std::unique_ptr<FrontendState>(std::move(state));
  }

  int64_t FramesFor(const FrontendState&, size_t n) const override { return int64_t(n / d_in_); }

  StatusOr<int> Process(FrontendState* base, const float* in, size_t n,
                        std::vector<float>* frames) const override {
    FrameState* state = StateCast<FrameState>(base);
    if (n % d_in_ != 0) {
      return InvalidArgumentError(fmt::format(
          "frame input of {} floats is not a whole number of frames of d_in = {} floats", n,
          d_in_));
    }
    SSM_RETURN_IF_ERROR(CheckFinite(in, n));
    const int64_t count = FramesFor(*state, n);
    SSM_RETURN_IF_ERROR(CheckFrameCount(count, n));

    const size_t old_size = frames->size();
    frames->insert(frames->end(), in, in + n);
    for (float* frame = frames->data() + old_size; frame != frames->data() + frames->size();
         frame += d_in_) {
      for (int j = 0; j < d_in_; ++j) {
        if (!mean_.empty()) frame[j] -= mean_[j];
        if (!std_.empty()) frame[j] /= std_[j];
      }
    }
    state->frames += count;
    return int(count);
  }

 private:
  int d_in_;
  std::vector<float> mean_, std_;  // empty or (d_in)
};

// ---- config checks: what each frontend needs to run (ModelConfig::Validate says more) ----------

Status CheckLogMelConfig(const ModelConfig& config) {
  const FrontendConfig& f = config.frontend;
  if (f.sample_rate <= 0) return InvalidArgumentError("frontend.sample_rate: must be positive");
  if (f.win_length <= 0) return InvalidArgumentError("frontend.win_length: must be positive");
  if (f.hop_length <= 0) return InvalidArgumentError("frontend.hop_length: must be positive");
  if (f.n_fft < f.win_length) {
    return InvalidArgumentError(
        fmt::format("frontend.n_fft: {} is less than win_length {}", f.n_fft, f.win_length));
  }
  if (f.n_mels <= 0) return InvalidArgumentError("frontend.n_mels: must be positive");
  if (!(f.f_min >= 0 && f.f_min < f.f_max)) {
    return InvalidArgumentError(fmt::format(
        "frontend.f_min, f_max: need 0 <= f_min < f_max, found {} and {}", f.f_min, f.f_max));
  }
  if (!(f.log_floor > 0)) return InvalidArgumentError("frontend.log_floor: must be positive");
  if (config.d_in != f.n_mels) {
    return InvalidArgumentError(
        fmt::format("d_in: {} differs from frontend.n_mels {}", config.d_in, f.n_mels));
  }
  return OkStatus();
}

Status CheckFrameConfig(const ModelConfig& config) {
  const FrontendConfig& f = config.frontend;
  if (config.d_in <= 0) return InvalidArgumentError("d_in: must be positive");
  for (const auto& [name, values] : {std::pair{"mean", &f.mean}, std::pair{"std", &f.std}}) {
    if (!values->empty() && values->size() != size_t(config.d_in)) {
      return InvalidArgumentError(fmt::format("frontend.{}: has {} values, expected d_in = {}",
                                              name, values->size(), config.d_in));
    }
  }
  for (size_t j = 0; j < f.std.size(); ++j) {
    if (!(f.std[j] > 0 && std::isfinite(f.std[j]))) {
      return InvalidArgumentError(
          fmt::format("frontend.std[{}]: {} is not a positive finite number", j, f.std[j]));
    }
  }
  return OkStatus();
}

}  // namespace

LogMelFn HostLogMel(const std::string& backend, const int* threads) {
  if (backend == "reference") return reference::LogMel;
  return [threads](const LogMelPlan& plan, const float* samples, int n_frames, float* out) {
    cpu::LogMel(plan, samples, n_frames, out, *threads);
  };
}

StatusOr<std::unique_ptr<Frontend>> CreateFrontend(const ModelConfig& config, LogMelFn log_mel) {
  const FrontendConfig& f = config.frontend;
  if (f.type == "log_mel") {
    SSM_RETURN_IF_ERROR(CheckLogMelConfig(config));
    SSM_CHECK_MSG(log_mel != nullptr, "a log_mel frontend needs a LogMelFn");
    LogMelParams params;
    params.sample_rate = f.sample_rate;
    params.win_length = f.win_length;
    params.hop_length = f.hop_length;
    params.n_fft = f.n_fft;
    params.n_mels = f.n_mels;
    params.f_min = f.f_min;
    params.f_max = f.f_max;
    params.log_floor = f.log_floor;
    return std::unique_ptr<Frontend>(std::make_unique<LogMelFrontend>(params, std::move(log_mel)));
  }
  if (f.type == "none") {
    SSM_RETURN_IF_ERROR(CheckFrameConfig(config));
    return std::unique_ptr<Frontend>(std::make_unique<FrameFrontend>(config.d_in, f.mean, f.std));
  }
  return InvalidArgumentError(
      fmt::format("frontend.type: unknown type '{}' (expected log_mel or none)", f.type));
}

}  // namespace ssm
