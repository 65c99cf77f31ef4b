// One open stream as the service holds it (docs/design.md §7): the model and engine slot it
// runs on, where its input and its outputs stand, its resume token, and the outputs of its
// latest frames that a resumed client may not have received. Its recurrent state and frontend
// carry live in its engine slot (Engine::SnapshotStream); together they are the snapshot.
// Owned by its call (call_reactor.h) and guarded by the call's lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/engine/snapshot.h"
#include "server/model/digest.h"
#include "server/service/model_registry.h"
#include "server/service/payload.h"
#include "server/service/scheduler.h"

namespace ssm {

// The outputs of a stream's latest frames: the last HeldFrames(d_out) of them (at least
// kMinFloats values), or all of them while the stream has produced fewer. One buffer per
// stream, allocated at its first outputs and filled as a ring: a chunk's outputs are copied in,
// so nothing is allocated per chunk and a stream's memory does not grow while it runs. (Small
// per-chunk buffers held for a minute each fragmented the heap, which kept growing.)
class HeldOutputs {
 public:
  static constexpr size_t kMinFloats = 16384;  // 64 KiB
  // Frames held of a model with d_out outputs per frame: the fewest that make kMinFloats.
  static size_t HeldFrames(int d_out) { return (kMinFloats + size_t(d_out) - 1) / size_t(d_out); }

  // Starts from a snapshot's held outputs (a resumed stream; of those, the latest HeldFrames are
  // kept), or empty at `first_frame`.
  void Reset(int64_t first_frame, const std::vector<float>& outputs, int d_out);
  // A chunk's outputs: `frames` frames from `first_frame` (the frame after the held ones).
  void Add(int64_t first_frame, int frames, const std::vector<float>& outputs);
  int64_t first_frame() const { return first_frame_; }
  size_t floats() const { return frames_ * size_t(d_out_); }
  // The held values, in frame order, appended to *out.
  void AppendTo(std::vector<float>* out) const;

 private:
  // Appends `frames` frames of d_out_ values, overwriting the oldest once the ring is full.
  void Push(const float* values, size_t frames);

  std::vector<float> ring_;  // HeldFrames(d_out_) frames; empty until the first outputs
  size_t start_ = 0;         // the oldest frame's slot in ring_ (0 until it is full)
  size_t frames_ = 0;        // frames held
  int64_t first_frame_ = 0;  // the oldest held frame's index in the stream
  int d_out_ = 1;
};

struct LiveStream {
  const ServedModel* model = nullptr;
  Scheduler* scheduler = nullptr;
  int slot = -1;  // the scheduler's (and engine's) stream id; -1 until open
  std::string id, label;
  PayloadFormat format = PayloadFormat::kUnspecified;
  uint64_t next_sequence = 0;  // the sequence number the client sends next
  uint64_t applied = 0;        // chunks applied to the state (their results delivered)
  int64_t frames_at_open = 0;  // the frame index when this call opened it (0, or a resume's)
  int64_t frames_done = 0;     // frames produced so far: the next frame's index

  // Resuming.
  bool has_token = false;
  std::string token;  // this call's, for the trailing metadata of a hand-off
  Digest token_hash{};
  HeldOutputs held;
  // A resumed call: the token the client presented still names the stream until the client
  // shows that it has the new one (its first message after `opened`).
  Digest presented_hash{};
  bool alias_pending = false;

  // Checkpoints and the hand-off (with a state store).
  bool checkpoint_in_flight = false;
  int64_t checkpoint_frame = 0;  // frame at the last checkpoint requested
  uint64_t checkpointed = 0;     // chunks saved in the store (StreamOutput field)
  bool checkpoints_written = false;
  bool handoff_started = false;
  bool handed_off = false;

  bool open() const { return slot >= 0; }
  // A chunk's OK result was applied: its sequence is done, its outputs are held.
  void Applied(uint64_t sequence, int64_t first_frame, int frames,
               const std::vector<float>& outputs);
  // Completes a snapshot the engine took of this stream's slot: next sequence and held outputs.
  // INTERNAL if the held outputs do not end at the snapshot's frame (never expected).
  Status FillSnapshot(StreamSnapshot* snapshot) const;
};

}  // namespace ssm
