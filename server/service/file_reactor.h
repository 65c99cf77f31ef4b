// The ProcessFile rpc: a whole upload, cut into segments of at most --file-segment-frames frames
// that the scheduler runs at file priority (behind real-time chunks), outputs streamed back as
// each segment completes. The engine is chunking-invariant, so the outputs equal an offline run.
#pragma once

#include <memory>
#include <vector>

#include "server/service/call_reactor.h"

namespace ssm {

class FileReactor final : public CallReactor {
 public:
  FileReactor(CallShared* shared, std::unique_ptr<CallPort> port);

 private:
  // Appends the upload chunk to the carry and submits every whole segment in it.
  Status HandleChunkLocked(uint64_t sequence, std::vector<float> values) override;
  // Submits the remainder (a last, shorter segment).
  void HandleInputEndLocked() override;

  size_t segment_values() const;  // input values per segment

  // Under mu_:
  std::vector<float> carry_;    // uploaded values not yet submitted (< one segment)
  uint64_t last_sequence_ = 0;  // of the last upload chunk; tags the last segment's output
};

}  // namespace ssm
