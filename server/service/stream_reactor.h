// The Stream rpc: one live signal, one response per chunk, real-time priority in the scheduler.
#pragma once

#include <memory>

#include "server/service/call_reactor.h"

namespace ssm {

class StreamReactor final : public CallReactor {
 public:
  StreamReactor(CallShared* shared, std::unique_ptr<CallPort> port);

 private:
  // Checks the chunk against --max-chunk-ms and submits it whole.
  Status HandleChunkLocked(uint64_t sequence, std::vector<float> values) override;
  // Nothing to flush: a log-mel frontend holds fewer than win_length samples, which never form
  // a frame, and a frame frontend holds nothing.
  void HandleInputEndLocked() override {}
};

}  // namespace ssm
