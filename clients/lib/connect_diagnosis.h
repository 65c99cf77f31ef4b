// Why a connection to ssm-server fails. gRPC reports only that it could not connect; this makes
// a connection of its own (TCP, then a TLS handshake with OpenSSL and the same files) and names
// the cause: nothing listening, a server certificate that is expired, not trusted or for another
// name, a server without TLS, a TLS server reached in plain text, a client certificate the
// server requires or does not accept.
#pragma once

#include <string>

#include "clients/lib/ssm_client.h"

namespace ssm::client {

// The cause, as a sentence that says what to do; "" when nothing specific was found. Takes at
// most about `timeout_s` (capped at 5 s).
std::string DiagnoseConnection(const std::string& address, const TlsClientOptions& tls,
                               double timeout_s);

}  // namespace ssm::client
