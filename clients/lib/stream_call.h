// Internal to the client library: starting the gRPC call behind a Stream.
#pragma once

#include <grpcpp/channel.h>

#include <memory>

#include "clients/lib/stream.h"
#include "ssmserve/v1/ssmserve.grpc.pb.h"

namespace ssm::client {

enum class StreamRpc { kStream, kProcessFile };

// Starts `rpc` on `stub` (sends `open`, begins reading) and returns the running call. The call
// keeps `channel` alive until it ends.
std::shared_ptr<StreamCall> StartStreamCall(std::shared_ptr<grpc::Channel> channel,
                                            ssmserve::v1::Ssm::Stub* stub, StreamRpc rpc,
                                            const StreamOptions& options);

}  // namespace ssm::client
