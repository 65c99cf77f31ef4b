// Internal to the client library: starting the gRPC call behind a Stream.
#pragma once

#include <grpcpp/channel.h>

#include <memory>

#include "clients/lib/stream.h"

namespace ssm::client {

enum class StreamRpc { kStream, kProcessFile };

// Starts `rpc` on `channel` (sends `open`, begins reading) and returns the running stream. The
// stream keeps `channel` alive until it ends, and starts its resumed calls on it.
std::shared_ptr<StreamCall> StartStreamCall(std::shared_ptr<grpc::Channel> channel, StreamRpc rpc,
                                            const StreamOptions& options);

}  // namespace ssm::client
