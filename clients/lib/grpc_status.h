// Internal to the client library: gRPC status -> ssm::Status.
#pragma once

#include <grpcpp/support/status.h>

#include "common/status.h"

namespace ssm::client {

// Same numeric code (ssm::StatusCode mirrors gRPC's), the server's message.
inline Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return OkStatus();
  return Status(static_cast<StatusCode>(status.error_code()), status.error_message());
}

}  // namespace ssm::client
