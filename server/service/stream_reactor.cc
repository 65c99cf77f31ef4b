#include "server/service/stream_reactor.h"

#include <fmt/format.h>

#include <utility>

namespace ssm {

StreamReactor::StreamReactor(CallShared* shared, std::unique_ptr<CallPort> port)
    : CallReactor(shared, std::move(port),
                  {"Stream", Priority::kRealTime, /*write_empty_outputs=*/true,
                   /*ends_on_drain=*/true, /*resumable=*/true}) {
  Start();
}

Status StreamReactor::HandleChunkLocked(uint64_t sequence, std::vector<float> values) {
  const ModelConfig& c = model().model->config();
  // Values per second of signal: samples (audio) or frames x d_in (frames).
  const double values_per_second = c.input_values_per_second();
  const double ms = 1000.0 * double(values.size()) / values_per_second;
  if (ms > config().max_chunk_ms)
    return InvalidArgumentError(
        fmt::format("chunk {} holds {:.1f} ms of signal, more than the server's limit of {} ms "
                    "(--max-chunk-ms); send shorter chunks",
                    sequence, ms, config().max_chunk_ms));
  SubmitLocked(sequence, std::move(values));
  return OkStatus();
}

}  // namespace ssm
