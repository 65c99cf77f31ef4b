// A stream's snapshot: everything needed to continue it exactly, on this or another server
// holding the same model (docs/design.md §7 documents the byte format).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/frontend/frontend.h"
#include "server/model/digest.h"

namespace ssm {

// Format version written and read by this server.
inline constexpr uint32_t kSnapshotVersion = 1;

struct StreamSnapshot {
  Digest model_fingerprint{};  // Model::fingerprint() of the model that ran the stream
  // The identity that opened the stream (an API key id, at most 64 bytes); only it may resume
  // the stream. "" when the server runs without keys.
  std::string owner;
  std::string backend;  // the backend that took it ("cpu", "cuda", "reference")
  std::string precision = "f32";
  uint64_t next_sequence = 0;  // the first chunk not applied to the state below
  FrontendCarry frontend;      // frontend.frames: frames emitted (the next frame's index)
  std::vector<std::vector<float>> layers;  // each layer's recurrent state, its own layout
  // The outputs of the stream's latest frames, [held_first_frame, frontend.frames), kept so
  // that a resumed client gets again what it may not have received. d_out floats per frame.
  int64_t held_first_frame = 0;
  int32_t d_out = 0;
  std::vector<float> held_outputs;
};

// The bytes of `snapshot`, with its checksum.
std::string EncodeSnapshot(const StreamSnapshot& snapshot);

// Reads bytes written by EncodeSnapshot. Fails closed, each case with its own message: DATA_LOSS
// for bytes that are not a snapshot, truncated or corrupt (bad checksum) or inconsistent;
// FAILED_PRECONDITION for an unknown format version. Checks nothing about the model (see
// Engine::RestoreStream). Never reads out of bounds or allocates more than the input's size.
StatusOr<StreamSnapshot> DecodeSnapshot(const std::string& bytes);

}  // namespace ssm
